"""WebQuestionsSP in Microsoft's original format, read from a path (the file is never copied here).

Layout: `{"Version", "FreebaseVersion", "Questions": [...]}`; each question has `QuestionId`,
`RawQuestion`, `ProcessedQuestion` and `Parses`; each parse has `InferentialChain` (a list of Freebase
relations, or null), `TopicEntityName` and `Answers` (entity answers carry `EntityName`, value answers
`AnswerArgument`; a null `EntityName` falls back to `AnswerArgument`).

Rules:
- question: `RawQuestion` (what the user typed; `ProcessedQuestion` is lower-cased, punctuation dropped).
- answers: the union of answer strings over ALL parses, de-duplicated, first-seen order. A question with
  several parses is ambiguous, and each parse's answers are a correct reading.
- hops: len(InferentialChain) of parse 0, or of the first parse that has a chain.
- no chain in any parse (54 of the 3,098 training questions, all single-parse): their SPARQL was
  written by hand because the question needs more than a relation path (superlatives, "which ...
  first?", comparisons). By default (`no_chain="complex"`) they get hops=2 (`NO_CHAIN_HOPS`) so they
  count as complex; `no_chain="skip"` drops them instead.
- questions with no answer in any parse are skipped (26 in the training file, 3 of them chainless) and
  counted. Answers keep the fallback MID when Freebase had no name (16 items have one; none has only
  MIDs).
- topic: `TopicEntityName` of parse 0, recorded for reports only; it is not meant for prompts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeready.datasets.errors import DatasetError
from edgeready.records import QAItem

SOURCE = "webqsp"
# Hops given to questions without an inferential chain when they are kept (see module docstring).
NO_CHAIN_HOPS = 2

NoChainRule = Literal["complex", "skip"]


@dataclass(frozen=True)
class WebQSPLoad:
    """The items and what was left out, so reports can state both."""

    path: Path
    version: str
    freebase_version: str
    questions: int
    items: tuple[QAItem, ...]
    skipped_no_answer: tuple[str, ...]
    # Questions without a chain: kept as complex, or skipped, depending on the rule.
    no_chain: tuple[str, ...]
    no_chain_rule: NoChainRule


def load_webqsp(path: Path, *, no_chain: NoChainRule = "complex") -> list[QAItem]:
    """The usable questions of a WebQSP file, in file order. See the module docstring for the rules."""
    return list(read_webqsp(path, no_chain=no_chain).items)


def read_webqsp(path: Path, *, no_chain: NoChainRule = "complex") -> WebQSPLoad:
    """Like `load_webqsp`, also returning the file's versions and the ids of left-out questions."""
    if no_chain not in ("complex", "skip"):
        raise ValueError(f"no_chain must be 'complex' or 'skip', got {no_chain!r}")
    path = Path(path)
    document = _read_json(path)
    questions = _require(document, "Questions", path, where="top level")
    if not isinstance(questions, list):
        raise DatasetError(f"{path}: key 'Questions' must be a list, got {type(questions).__name__}")

    items: list[QAItem] = []
    no_answer: list[str] = []
    chainless: list[str] = []
    for index, question in enumerate(questions):
        item = _parse_question(question, index, path)
        if not item.answers:
            no_answer.append(item.id)
            continue
        if item.hops == 0:
            chainless.append(item.id)
            if no_chain == "skip":
                continue
            item = QAItem(item.id, item.question, item.answers, NO_CHAIN_HOPS, item.source, item.topic)
        items.append(item)
    return WebQSPLoad(
        path=path,
        version=str(document.get("Version", "")),
        freebase_version=str(document.get("FreebaseVersion", "")),
        questions=len(questions),
        items=tuple(items),
        skipped_no_answer=tuple(no_answer),
        no_chain=tuple(chainless),
        no_chain_rule=no_chain,
    )


def webqsp_stats(items: Iterable[QAItem]) -> dict[str, int]:
    """Counts for a report: total, per complexity, per hop count (`hops_1`, `hops_2`, ...)."""
    items = list(items)
    by_complexity = Counter(item.complexity for item in items)
    by_hops = Counter(item.hops for item in items)
    stats = {"total": len(items), "simple": by_complexity["simple"], "complex": by_complexity["complex"]}
    stats.update({f"hops_{hops}": count for hops, count in sorted(by_hops.items())})
    return stats


def _read_json(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(document, dict):
        raise DatasetError(f"{path}: top level must be a JSON object, got {type(document).__name__}")
    return document


def _require(mapping: object, key: str, path: Path, *, where: str) -> Any:
    """mapping[key], or a DatasetError naming the file, the place and the key."""
    if not isinstance(mapping, dict):
        raise DatasetError(f"{path}: {where} must be a JSON object, got {type(mapping).__name__}")
    if key not in mapping:
        raise DatasetError(f"{path}: {where}: missing key '{key}'")
    return mapping[key]


def _parse_question(question: object, index: int, path: Path) -> QAItem:
    """One question as an item; hops=0 marks "no chain in any parse" for the caller to decide."""
    where = f"Questions[{index}]"
    qid = _require(question, "QuestionId", path, where=where)
    where = f"{where} ({qid})"
    text = _require(question, "RawQuestion", path, where=where)
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{path}: {where}: key 'RawQuestion' must be a non-empty string")
    parses = _require(question, "Parses", path, where=where)
    if not isinstance(parses, list):
        raise DatasetError(f"{path}: {where}: key 'Parses' must be a list, got {type(parses).__name__}")
    answers: list[str] = []
    for p, parse in enumerate(parses):
        answers.extend(_parse_answers(parse, path, where=f"{where} Parses[{p}]"))
    first = parses[0] if parses else {}
    return QAItem(
        id=str(qid),
        question=text.strip(),
        answers=tuple(dict.fromkeys(answers)),  # de-duplicate, first-seen order
        hops=_hops(parses),
        source=SOURCE,
        topic=str(first.get("TopicEntityName") or ""),
    )


def _parse_answers(parse: object, path: Path, *, where: str) -> list[str]:
    answers = _require(parse, "Answers", path, where=where)
    if not isinstance(answers, list):
        raise DatasetError(f"{path}: {where}: key 'Answers' must be a list, got {type(answers).__name__}")
    texts = []
    for a, answer in enumerate(answers):
        if not isinstance(answer, dict):
            raise DatasetError(f"{path}: {where} Answers[{a}] must be a JSON object")
        # Entity answers whose Freebase entity has no English name keep only the MID/value.
        text = answer.get("EntityName") or answer.get("AnswerArgument")
        if text is not None and str(text).strip():
            texts.append(str(text).strip())
    return texts


def _hops(parses: Sequence[Any]) -> int:
    """Chain length of parse 0, else of the first parse with a chain; 0 when none has one."""
    for parse in parses:
        chain = parse.get("InferentialChain") if isinstance(parse, dict) else None
        if chain:
            return len(chain)
    return 0
