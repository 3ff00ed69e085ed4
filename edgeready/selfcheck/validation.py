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
from typing import Any

import numpy as np

from edgeready.errors import DatasetError
from edgeready.selfcheck.base import SentenceScorer
from edgeready.selfcheck.signals import Calibration, SignalExtractor

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
    """Read the WikiBio hallucination jsonl (fields gpt3_sentences, annotation, wiki_bio_text). A line that is
    not JSON, lacks a field, has no sentences or no reference, unknown labels or a label count that differs
    from the sentence count is a DatasetError naming the file, the line and the field."""
    passages: list[LabelledPassage] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            at = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{at}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{at}: not a JSON object")
            missing = [k for k in ("gpt3_sentences", "annotation", "wiki_bio_text") if k not in row]
            if missing:
                raise DatasetError(f"{at}: {missing[0]}: missing")
            sentences, annotations = row["gpt3_sentences"], row["annotation"]
            if not isinstance(sentences, list) or not sentences or not all(
                    isinstance(x, str) and x.strip() for x in sentences):
                raise DatasetError(f"{at}: gpt3_sentences: a non-empty list of non-empty sentences is needed")
            if not isinstance(annotations, list):
                raise DatasetError(f"{at}: annotation: a list of labels is needed")
            if len(sentences) != len(annotations):
                raise DatasetError(f"{at}: {len(sentences)} sentences but {len(annotations)} labels")
            unknown = {str(a) for a in annotations} - set(LABELS)
            if unknown:
                raise DatasetError(f"{at}: annotation: unknown label(s) {sorted(unknown)}; "
                                   f"expected {', '.join(LABELS)}")
            if not isinstance(row["wiki_bio_text"], str) or not row["wiki_bio_text"].strip():
                raise DatasetError(f"{at}: wiki_bio_text: empty (the reference passage is the evidence)")
            passages.append(
                LabelledPassage(
                    passage_idx=int(row.get("passage_idx", len(passages))),
                    concept=str(row.get("concept", "")),
                    sentences=tuple(sentences),
                    annotations=tuple(annotations),
                    reference=str(row["wiki_bio_text"]),
                )
            )
    if not passages:
        raise DatasetError(f"{path}: no labelled passage")
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


# -- signals, their combination, calibration (edgeready/selfcheck/signals.py) ---------------------------------
def brier(probs: Sequence[float], positive: Sequence[int]) -> float:
    """Mean squared error of probabilities against 0/1 outcomes."""
    p, y = np.asarray(probs, dtype=float), np.asarray(positive, dtype=float)
    return float(np.mean((p - y) ** 2))


def expected_calibration_error(probs: Sequence[float], positive: Sequence[int], bins: int = 10) -> float:
    """Sum over equal-width probability bins of (share of sentences in the bin) x |mean probability - observed
    rate| in the bin."""
    p, y = np.asarray(probs, dtype=float), np.asarray(positive, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(np.mean(which == b) * abs(p[which == b].mean() - y[which == b].mean())
                     for b in range(bins) if np.any(which == b)))


@dataclass(frozen=True)
class SignalTable:
    """Every labelled sentence's signals, label and passage (the cross-validation groups)."""

    x: np.ndarray
    labels: tuple[str, ...]
    groups: np.ndarray
    seconds: float

    @property
    def nonfactual(self) -> np.ndarray:
        return np.asarray([int(lab != "accurate") for lab in self.labels])


def signal_table(extractor: SignalExtractor, passages: Sequence[LabelledPassage],
                 evidence: dict[int, list[str]] | None = None) -> SignalTable:
    """The signals of every sentence, with the passage's Wikipedia paragraph as the evidence, or the passages
    `evidence` maps its passage_idx to (e.g. what a model writes about the same person: the gate's setting)."""
    from edgeready.selfcheck.embedding import split_sentences

    def of(p: LabelledPassage) -> list[str]:
        return evidence[p.passage_idx] if evidence is not None else [p.reference]

    start = time.perf_counter()
    extractor.prefetch([s for p in passages for s in (*p.sentences, *(e for ev in of(p) for e in split_sentences(ev)))])
    blocks, labels, groups = [], [], []
    for p in passages:
        blocks.append(extractor.signals(list(p.sentences), of(p)))
        labels += p.annotations
        groups += [p.passage_idx] * len(p.sentences)
    return SignalTable(np.vstack(blocks), tuple(labels), np.asarray(groups), time.perf_counter() - start)


def cross_validate(table: SignalTable, columns: Sequence[str], folds: int = 5) -> tuple[np.ndarray, list[dict]]:
    """Out-of-fold P(not factual) from a Combination of `columns`, folds grouped by passage (GroupKFold): no
    sentence is scored by a model fitted on its own passage. Returns the probabilities and each fold's figures."""
    from sklearn.model_selection import GroupKFold

    from edgeready.selfcheck.signals import Combination

    y = table.nonfactual
    out = np.zeros(len(y))
    per_fold = []
    for k, (train, test) in enumerate(GroupKFold(n_splits=folds).split(table.x, y, table.groups)):
        out[test] = Combination(tuple(columns)).fit(table.x[train], y[train]).predict(table.x[test])
        per_fold.append({"fold": k, "passages": len(set(table.groups[test])), "sentences": len(test),
                         "auc_pr_nonfact": auc_pr(y[test], out[test]), "brier": brier(out[test], y[test])})
    return out, per_fold


def calibration_report(table: SignalTable, calibration: Calibration) -> dict[str, Any]:
    """A fitted calibration applied as it is to `table` (no refit): AUC-PR of the three tasks, Brier score,
    calibration error, and the mean probability against the observed share of non-factual sentences (what
    the gate's rate estimates)."""
    y = table.nonfactual
    probs = calibration.predict(table.x)
    return {"auc_pr": auc_pr_table(probs.tolist(), table.labels), "brier": brier(probs, y),
            "ece": expected_calibration_error(probs, y), "mean_probability": float(probs.mean()),
            "observed_share": float(y.mean())}


def signal_report(table: SignalTable, folds: int = 5) -> dict[str, dict]:
    """Per signal and for all of them combined: AUC-PR of the three tasks, Brier score and expected calibration
    error of the cross-validated probabilities, and the folds' figures."""
    from edgeready.selfcheck.signals import COMBINED, SIGNALS

    y = table.nonfactual
    rows: dict[str, dict] = {}
    for name in (*SIGNALS, "combination"):
        columns = COMBINED if name == "combination" else (name,)
        probs, per_fold = cross_validate(table, columns, folds)
        # A signal alone is ranked by its own value (what a threshold on it would do); the combination by its
        # cross-validated probability.
        ranked = probs if name == "combination" else table.x[:, SIGNALS.index(name)]
        span = float(ranked.max() - ranked.min()) or 1.0
        rows[name] = {"auc_pr": auc_pr_table(((ranked - ranked.min()) / span).tolist(), table.labels),
                      "brier": brier(probs, y), "ece": expected_calibration_error(probs, y), "folds": per_fold}
    return rows
