"""Validate sentence scorers against human labels (SelfCheckGPT's WikiBio annotations) with AUC-PR.

Three detection tasks, as in SelfCheckGPT's Table 2:
- NonFact:  positive = major_inaccurate or minor_inaccurate; the score is used as is.
- NonFact*: positive = major_inaccurate only, over ALL sentences (minor counts as negative). We drop no
  passages, so the three tasks rank the same sentence set (a deliberate simplification of the paper).
- Factual:  positive = accurate; ranked by 1 - score (a factual sentence should score low).
AUC-PR is sklearn's precision_recall_curve followed by auc(recall, precision), as the SelfCheckGPT
repository computes it. The random baseline of each task is its positive rate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeready.selfcheck.base import SentenceScorer

LABELS = ("accurate", "minor_inaccurate", "major_inaccurate")
TASKS = ("NonFact", "NonFact*", "Factual")


@dataclass(frozen=True)
class LabelledPassage:
    """One generated passage, its per-sentence human labels, and the real Wikipedia paragraph."""

    passage_idx: int
    concept: str
    sentences: tuple[str, ...]
    annotations: tuple[str, ...]
    reference: str


def load_labelled(path: str | Path) -> list[LabelledPassage]:
    """Read the WikiBio hallucination jsonl (fields gpt3_sentences, annotation, wiki_bio_text)."""
    passages: list[LabelledPassage] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            sentences, annotations = tuple(row["gpt3_sentences"]), tuple(row["annotation"])
            if len(sentences) != len(annotations):
                raise ValueError(f"{path}:{lineno}: {len(sentences)} sentences but {len(annotations)} labels")
            unknown = set(annotations) - set(LABELS)
            if unknown:
                raise ValueError(f"{path}:{lineno}: unknown annotation(s) {sorted(unknown)}")
            passages.append(
                LabelledPassage(
                    passage_idx=int(row.get("passage_idx", len(passages))),
                    concept=str(row.get("concept", "")),
                    sentences=sentences,
                    annotations=annotations,
                    reference=str(row["wiki_bio_text"]),
                )
            )
    return passages


def auc_pr(binary: Sequence[int], scores: Sequence[float]) -> float:
    from sklearn.metrics import auc, precision_recall_curve

    precision, recall, _ = precision_recall_curve(list(binary), list(scores))
    return float(auc(recall, precision))


def auc_pr_table(scores: Sequence[float], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """AUC-PR and random baseline for NonFact, NonFact* and Factual, one score per labelled sentence."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if not labels:
        raise ValueError("no labelled sentences")
    tasks = {
        "NonFact": ([int(lab != "accurate") for lab in labels], list(scores)),
        "NonFact*": ([int(lab == "major_inaccurate") for lab in labels], list(scores)),
        "Factual": ([int(lab == "accurate") for lab in labels], [1.0 - s for s in scores]),
    }
    table: dict[str, dict[str, float]] = {}
    for task, (binary, ranked) in tasks.items():
        positives = sum(binary)
        table[task] = {
            # AUC-PR is undefined without positives; NaN keeps the row visible instead of crashing.
            "auc_pr": auc_pr(binary, ranked) if positives else float("nan"),
            "random": positives / len(binary),
            "n_pos": float(positives),
            "n": float(len(binary)),
        }
    return table


def score_passages(
    scorer: SentenceScorer, passages: Sequence[LabelledPassage]
) -> tuple[list[float], list[str], float]:
    """Score every sentence with the passage's Wikipedia paragraph as the single evidence passage.

    Returns flat scores, flat labels and the wall-clock seconds spent scoring (model load included)."""
    scores: list[float] = []
    labels: list[str] = []
    start = time.perf_counter()
    for p in passages:
        got = scorer.score(list(p.sentences), [p.reference])
        if len(got) != len(p.sentences):
            raise RuntimeError(f"{scorer.name} returned {len(got)} scores for {len(p.sentences)} sentences")
        scores.extend(got)
        labels.extend(p.annotations)
    return scores, labels, time.perf_counter() - start


def markdown_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """results: scorer name -> auc_pr_table(). One row per scorer, AUC-PR (random) per task, in %."""
    lines = [
        "| scorer | " + " | ".join(f"{t} AUC-PR (random)" for t in TASKS) + " |",
        "|---|" + "---|" * len(TASKS),
    ]
    for name, table in results.items():
        cells = [f"{100 * table[t]['auc_pr']:.2f} ({100 * table[t]['random']:.2f})" for t in TASKS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
