"""Question-answering scores: a response is correct when its answer part contains a gold answer.

The rules, stated once and used everywhere:
- Answer part: the response up to its first newline (after stripping leading whitespace). Few-shot
  prompts end each answer with a newline, so anything after it is the model starting a new example;
  counting it would let rambling "contain" the gold by chance.
- Normalization (SQuAD-style, extended to Unicode): NFKD then drop combining marks (so "Brasília"
  matches "Brasilia"), casefold, punctuation to spaces, drop the articles a/an/the, collapse
  whitespace; runs of single letters are joined first ("D.C." -> "dc", "U.S.A." -> "usa") so that
  abbreviations match with or without their dots.
- Contains: the normalized gold occurs in the normalized answer on word boundaries ("rome" is not in
  "romeo"). Exact match: the normalized answer equals a normalized gold.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# Letters with no decomposition that writers routinely replace by their base letters.
_FOLD = str.maketrans({"ı": "i", "ł": "l", "ø": "o", "đ": "d", "ð": "d", "ħ": "h", "æ": "ae", "œ": "oe", "þ": "th"})
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPACES = re.compile(r"\s+")
# Two or more single characters separated by single spaces.
_LETTER_RUN = re.compile(r"\b(?:\w )+\w\b")


def answer_part(response: str) -> str:
    """The part of a response that is judged: up to the first newline."""
    return response.lstrip().split("\n", 1)[0].strip()


def normalize(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    no_marks = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = no_marks.casefold().translate(_FOLD)
    # Every Unicode punctuation or symbol becomes a space, so "U.S." and "U S" compare equal
    # and "São Tomé-and-Príncipe" splits on the hyphen like it does on spaces.
    no_punct = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in folded)
    # Join letter runs before dropping articles, or the "a" of "U.S.A." would go as an article.
    spaced = _SPACES.sub(" ", no_punct).strip()
    joined = _LETTER_RUN.sub(lambda m: m.group(0).replace(" ", ""), spaced)
    return _SPACES.sub(" ", _ARTICLES.sub(" ", joined)).strip()


def contains_gold(response: str, golds: Iterable[str]) -> bool:
    answer = f" {normalize(answer_part(response))} "
    for gold in golds:
        g = normalize(gold)
        if g and f" {g} " in answer:
            return True
    return False


def exact_match(response: str, golds: Iterable[str]) -> bool:
    answer = normalize(answer_part(response))
    return bool(answer) and any(answer == normalize(g) for g in golds)


@dataclass(frozen=True)
class QAScore:
    correct: bool
    exact: bool
    answer: str


def score_response(response: str, golds: Iterable[str]) -> QAScore:
    golds = tuple(golds)
    return QAScore(
        correct=contains_gold(response, golds),
        exact=exact_match(response, golds),
        answer=answer_part(response),
    )
