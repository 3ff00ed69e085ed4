"""Question-answering scores: a response is correct when its answer part contains a gold answer.

The rules, stated once and used everywhere:
- Answer part: the response up to its first newline (after stripping leading whitespace). Few-shot
  prompts end each answer with a newline, so anything after it is the model starting a new example;
  counting it would let rambling "contain" the gold by chance.
- Normalization (SQuAD-style, extended to Unicode): casefold, NFKD, drop combining marks (so
  "Brasília" matches "Brasilia"), punctuation to spaces, drop the articles a/an/the, collapse
  whitespace; dotted abbreviations lose their dots first ("D.C." -> "dc", "U.S.A." -> "usa") so
  that they match with or without them.
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
# Dotted abbreviations: single letters joined by dots ("D.C.", "U.S.A", "e.g.").
_ABBREVIATION = re.compile(r"(?<!\w)[^\W\d_](?:\.[^\W\d_])+\.?(?!\w)")


def answer_part(response: str) -> str:
    """The part of a response that is judged: up to the first newline."""
    return response.lstrip().split("\n", 1)[0].strip()


def normalize(text: str) -> str:
    # Casefold on both sides of NFKD: first so that case mappings that expand ("ᾀ" -> "ἀι") happen
    # before marks are dropped, again because compatibility forms can decompose to capitals.
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    no_marks = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = no_marks.casefold().translate(_FOLD)
    # Abbreviations lose their dots first, or the "a" of "U.S.A." would go as an article; doing
    # it only for dotted letters keeps the rule local, so matching stays context-free.
    joined = _ABBREVIATION.sub(lambda m: m.group(0).replace(".", ""), folded)
    # Every other Unicode punctuation or symbol becomes a space, so "São Tomé-and-Príncipe" splits
    # on the hyphen like it does on spaces.
    no_punct = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in joined)
    return _SPACES.sub(" ", _ARTICLES.sub(" ", no_punct)).strip()


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
