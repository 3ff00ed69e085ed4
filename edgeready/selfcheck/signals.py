"""Offline signals of whether a sentence is supported by its evidence, and their learned combination.

Each signal is a number per sentence, higher = less supported, computed from the sentence and the evidence
passages alone (no hub download):

- `embedding_max`: 1 - the best cosine between the sentence and any evidence sentence (all-MiniLM-L6-v2, the
  embedding scorer's score);
- `embedding_mean`: 1 - the mean over evidence passages of each passage's best cosine (with N samples as the
  evidence: how many of them say something close; with one passage it equals `embedding_max`);
- `unigram_avg`, `unigram_max`: the average and the largest negative log-probability of the sentence's tokens
  under a unigram model of the evidence and the passage (SelfCheckGPT-Ngram's raw values);
- `content_absent`: the share of the sentence's content words (not stop words) that no evidence passage uses;
- `numbers_absent`: the share of its numbers (years, dates, counts) that no evidence passage contains (0 when
  it has none), and `has_number`;
- `names_absent`: the share of its capitalized words after the first (names, places, titles) absent from the
  evidence (0 when it has none);
- `position`: the sentence's place in its passage, 0 (first) to 1 (last): generated biographies drift from
  the facts as they go on.

`Combination` is a logistic regression on the standardized signals (scikit-learn), fitted on labelled
sentences; its output is the estimated probability that a sentence is not factual. Validation fits it with
grouped cross-validation by passage (no passage is scored by a model fitted on it): edgeready/selfcheck/
validation.py `cross_validate`. In the same folds gradient-boosted trees gained 0.9 NonFact points and lost 8
NonFact* points, and splines lost on both: a linear model it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS as STOP

from edgeready.selfcheck.base import check_inputs
from edgeready.selfcheck.embedding import EmbeddingScorer, split_sentences
from edgeready.selfcheck.ngram import NgramModel, tokenize

SIGNALS = ("embedding_max", "embedding_mean", "unigram_avg", "unigram_max", "content_absent", "numbers_absent",
           "has_number", "names_absent", "position")

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")


def _absent_share(items: list[str], vocabulary: set[str]) -> float:
    return sum(it not in vocabulary for it in items) / len(items) if items else 0.0


def lexical_signals(sentence: str, evidence_tokens: set[str], evidence_numbers: set[str]) -> dict[str, float]:
    """content_absent, numbers_absent, has_number and names_absent of one sentence."""
    tokens = tokenize(sentence)
    content = [t for t in tokens if t not in STOP and not t.isdigit()]
    numbers = [n.replace(",", "") for n in _NUMBER.findall(sentence)]
    words = _WORD.findall(sentence)
    names = [w.lower() for w in words[1:] if w[0].isupper() and w.lower() not in STOP]
    return {"content_absent": _absent_share(content, evidence_tokens),
            "numbers_absent": _absent_share(numbers, evidence_numbers), "has_number": float(bool(numbers)),
            "names_absent": _absent_share([t for n in names for t in tokenize(n)], evidence_tokens)}


def unigram_signals(sentences: Sequence[str], evidence: Sequence[str]) -> list[tuple[float, float]]:
    """(average, largest) negative log-probability of each sentence's tokens under a unigram model fitted on the
    evidence and the sentences themselves (as SelfCheckGPT-Ngram fits it)."""
    model = NgramModel(n=1, k=1.0).fit([tokenize(p) for p in evidence] + [tokenize(" ".join(sentences))])
    out = []
    for s in sentences:
        nll = [-model.logprob((), t) for t in tokenize(s)]
        out.append((float(np.mean(nll)), float(max(nll))) if nll else (0.0, 0.0))
    return out


class SignalExtractor:
    """The signals of every sentence of one passage against its evidence passages (one encode call each)."""

    def __init__(self, embedding: EmbeddingScorer | None = None):
        self.embedding = embedding or EmbeddingScorer()
        self._vectors: dict[str, np.ndarray] = {}

    def prefetch(self, texts: Sequence[str]) -> None:
        """Encode many texts in one call (sentence-transformers sorts a call by length and pads little), to be
        looked up by signals(): how a validation run scores hundreds of passages in seconds."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if todo:
            self._vectors.update(zip(todo, self.embedding.encode(todo), strict=True))

    def _encode(self, texts: list[str]) -> np.ndarray:
        self.prefetch(texts)
        return np.stack([self._vectors[t] for t in texts])

    def signals(self, sentences: Sequence[str], evidence: Sequence[str]) -> np.ndarray:
        """A (sentences x SIGNALS) array, in the order of SIGNALS."""
        check_inputs(sentences, evidence)
        if not sentences:
            return np.zeros((0, len(SIGNALS)))
        emb_max, emb_mean = self._embedding(sentences, evidence)
        tokens = {t for p in evidence for t in tokenize(p)}
        numbers = {n.replace(",", "") for p in evidence for n in _NUMBER.findall(p)}
        uni = unigram_signals(sentences, evidence)
        rows = []
        for k, s in enumerate(sentences):
            lex = lexical_signals(s, tokens, numbers)
            rows.append([emb_max[k], emb_mean[k], uni[k][0], uni[k][1], lex["content_absent"],
                         lex["numbers_absent"], lex["has_number"], lex["names_absent"],
                         k / (len(sentences) - 1) if len(sentences) > 1 else 0.0])
        return np.asarray(rows, dtype=np.float64)

    def _embedding(self, sentences: Sequence[str], evidence: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        per_passage = [split_sentences(p) for p in evidence]
        flat = list(dict.fromkeys(s for ps in per_passage for s in ps))
        if not flat:
            ones = np.ones(len(sentences))
            return ones, ones
        emb = self._encode(list(sentences) + flat)
        sims = emb[: len(sentences)] @ emb[len(sentences):].T
        index = {s: i for i, s in enumerate(flat)}
        best = [sims[:, [index[s] for s in ps]].max(axis=1) for ps in per_passage if ps]
        emb_max = np.clip(1 - sims.max(axis=1), 0, 1)
        emb_mean = np.clip(1 - np.mean(best, axis=0), 0, 1)
        return emb_max, emb_mean


@dataclass
class Combination:
    """Logistic regression on standardized signals: P(not factual | signals). `columns` selects signals."""

    columns: tuple[str, ...] = SIGNALS
    # Inverse regularization. 0.1 (grouped 5-fold CV on the WikiBio dev half, 2026-12-03): NonFact 86.07 and
    # calibration error 0.047, against 85.96 and 0.050 at 1 and 10; nothing else moved by more than 0.01.
    c: float = 0.1
    _model: Any = None

    def _pick(self, x: np.ndarray) -> np.ndarray:
        return x[:, [SIGNALS.index(c) for c in self.columns]]

    def fit(self, x: np.ndarray, nonfactual: np.ndarray) -> Combination:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self._model = make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=1000))
        self._model.fit(self._pick(x), nonfactual)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("fit() first")
        return self._model.predict_proba(self._pick(x))[:, 1]

    def coefficients(self) -> dict[str, Any]:
        """What a shipped scorer needs to reproduce predict(): the scaler's means and scales, the weights."""
        scaler, lr = self._model[0], self._model[1]
        return {"columns": list(self.columns), "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
                "weights": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0])}
