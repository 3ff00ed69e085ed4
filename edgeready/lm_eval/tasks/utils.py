"""The datasets and the per-item metric of edgeready's shipped lm-eval tasks, built from the suite's own loaders
(no download: lm-eval calls these through each task's `custom_dataset`).

- `countries_qa` and `countries_mc`: the embedded country knowledge base (edgeready.datasets.countries), as
  generated questions and as four-way multiple choice;
- `webqsp`: WebQSP's training file read from the data directory (`--metadata '{"data_dir": ...}'`, the
  EDGEREADY_DATA_DIR variable, or ../shared/data);
- `contains_answer`: the accuracy gate's own rule (a gold answer contained in the answer part), as an lm-eval
  `process_results`, so the gate and lm-eval score a response the same way.
The few-shot examples are the accuracy gate's (edgeready.prompts.FEW_SHOT): none is about countries.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import datasets

from edgeready.datasets.countries import load_countries_qa
from edgeready.datasets.webqsp import load_webqsp
from edgeready.prompts import FEW_SHOT
from edgeready.records import QAItem
from edgeready.scoring.qa import score_response

# Wrong choices for the few-shot examples of the multiple-choice task (the right one is FEW_SHOT's answer).
_SHOT_DISTRACTORS = (
    ("Christopher Marlowe", "Ben Jonson", "John Milton"),
    ("Saturn", "Neptune", "Earth"),
    ("Seine", "Po", "Arno"),
    ("Ag", "Go", "Gd"),
)
CHOICES = 4


def _rows(items: list[QAItem]) -> list[dict[str, Any]]:
    return [{"id": it.id, "question": it.question, "answers": list(it.answers), "hops": it.hops} for it in items]


def _shots() -> datasets.Dataset:
    return datasets.Dataset.from_list([{"id": f"shot-{i}", "question": q, "answers": [a], "hops": 1}
                                       for i, (q, a) in enumerate(FEW_SHOT)])


def countries_qa(**_: Any) -> datasets.DatasetDict:
    """The embedded QA set (854 questions) as `test`, the gate's few-shot examples as `train`."""
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(_rows(load_countries_qa())), "train": _shots()})


def _relation(item_id: str) -> str:
    """What a KB question asks for: "kb-capital-FRA" and "kb2-capital-via-borders-FRA" both ask a capital."""
    return item_id.split("-")[1]


def countries_mc(**_: Any) -> datasets.DatasetDict:
    """Each embedded question with four choices: its first gold answer and three first answers of other questions
    asking for the same relation (none of them an accepted answer), in an order seeded by the question's id."""
    items = load_countries_qa()
    pool: dict[str, list[str]] = defaultdict(list)
    for it in items:
        if it.answers[0] not in pool[_relation(it.id)]:
            pool[_relation(it.id)].append(it.answers[0])
    rows = []
    for it in items:
        accepted = {a.casefold() for a in it.answers}
        wrong = sorted(a for a in pool[_relation(it.id)] if a.casefold() not in accepted)
        rng = random.Random(it.id)  # string seeds are hashed with SHA-512: the same on every machine
        choices = [it.answers[0], *rng.sample(wrong, CHOICES - 1)]
        rng.shuffle(choices)
        rows.append({**_rows([it])[0], "choices": choices, "label": choices.index(it.answers[0])})
    shots = [{"id": f"shot-{i}", "question": q, "answers": [a], "hops": 1, "choices": [a, *wrong], "label": 0}
             for i, ((q, a), wrong) in enumerate(zip(FEW_SHOT, _SHOT_DISTRACTORS, strict=True))]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows),
                                 "train": datasets.Dataset.from_list(shots)})


def webqsp(*, path: str = "webqsp/WebQSP.train.json", data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    """WebQSP's questions with at least one answer (edgeready.datasets.webqsp's rules) as `test`."""
    file = Path(path).expanduser()
    if not file.is_absolute():
        base = data_dir or os.environ.get("EDGEREADY_DATA_DIR") or "../shared/data"
        file = Path(base).expanduser() / file
    if not file.is_file():
        raise FileNotFoundError(f"edgeready_webqsp: {file} not found (give the data directory with --metadata "
                                "'{\"data_dir\": DIR}' or EDGEREADY_DATA_DIR)")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(_rows(load_webqsp(file))), "train": _shots()})


def contains_answer(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """1 when the answer part (up to the first newline) contains a gold answer after normalization."""
    score = score_response(results[0], doc["answers"])
    return {"contains": float(score.correct), "exact": float(score.exact)}
