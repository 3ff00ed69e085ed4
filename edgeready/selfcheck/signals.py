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
  the facts as they go on;
- `passage_embedding`, `passage_unigram`, `passage_content`, `passage_numbers`, `passage_names`: the mean of
  `embedding_mean`, `unigram_avg`, `content_absent`, `numbers_absent` and `names_absent` over the sentences
  of the same passage. Hallucinated sentences come in hallucinated passages (a model that does not know a
  person invents the whole life), so how unsupported its neighbours are says much about a sentence: on the
  WikiBio dev half, adding these five means raised the combination's NonFact AUC-PR from 86.07 to 89.40 and
  NonFact* from 63.72 to 73.89 (grouped 5-fold cross-validation, 2026-12-03). They use the passage and the
  evidence only, never a label.

`Combination` is a logistic regression on the standardized signals (scikit-learn), fitted on labelled
sentences; its output is the estimated probability that a sentence is not factual. Validation fits it with
grouped cross-validation by passage (no passage is scored by a model fitted on it): edgeready/selfcheck/
validation.py `cross_validate`. In the same folds gradient-boosted trees gained 0.9 NonFact points and lost 8
NonFact* points, and splines lost on both: a linear model it is. Up-weighting major errors in the fit moved
NonFact* by under 0.5 points and cost NonFact as much.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from edgeready.selfcheck.base import check_inputs
from edgeready.selfcheck.embedding import EmbeddingScorer, split_sentences
from edgeready.selfcheck.ngram import NgramModel, tokenize

SENTENCE_SIGNALS = ("embedding_max", "embedding_mean", "unigram_avg", "unigram_max", "content_absent",
                    "numbers_absent", "has_number", "names_absent", "position")
# Each passage signal is the passage's mean of one sentence signal.
PASSAGE_SIGNALS = {"passage_embedding": "embedding_mean", "passage_unigram": "unigram_avg",
                   "passage_content": "content_absent", "passage_numbers": "numbers_absent",
                   "passage_names": "names_absent"}
SIGNALS = (*SENTENCE_SIGNALS, *PASSAGE_SIGNALS)

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")


@cache
def _stop_words() -> frozenset[str]:
    # scikit-learn's English list; imported on first use (sklearn.feature_extraction takes seconds to import,
    # and a target that names a calibration file reads this module while it loads).
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def _absent_share(items: list[str], vocabulary: set[str]) -> float:
    return sum(it not in vocabulary for it in items) / len(items) if items else 0.0


def lexical_signals(sentence: str, evidence_tokens: set[str], evidence_numbers: set[str]) -> dict[str, float]:
    """content_absent, numbers_absent, has_number and names_absent of one sentence."""
    tokens = tokenize(sentence)
    stop = _stop_words()
    content = [t for t in tokens if t not in stop and not t.isdigit()]
    numbers = [n.replace(",", "") for n in _NUMBER.findall(sentence)]
    words = _WORD.findall(sentence)
    names = [w.lower() for w in words[1:] if w[0].isupper() and w.lower() not in stop]
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

    def forget(self) -> None:
        """Drop the encoded texts (a gate scores passage after passage; none is looked up twice)."""
        self._vectors.clear()

    def _encode(self, texts: list[str]) -> np.ndarray:
        self.prefetch(texts)
        return np.stack([self._vectors[t] for t in texts])

    def signals(self, sentences: Sequence[str], evidence: Sequence[str]) -> np.ndarray:
        """A (sentences x SIGNALS) array, in the order of SIGNALS."""
        check_inputs(sentences, evidence)
        if not sentences:
            return np.zeros((0, len(SIGNALS)))
        x = self._sentence_signals(sentences, evidence)
        means = x[:, [SENTENCE_SIGNALS.index(c) for c in PASSAGE_SIGNALS.values()]].mean(axis=0)
        return np.hstack([x, np.broadcast_to(means, (len(sentences), len(means)))])

    def _sentence_signals(self, sentences: Sequence[str], evidence: Sequence[str]) -> np.ndarray:
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


# The signals the shipped combination uses: embedding_max is left out because it equals embedding_mean with one
# evidence passage (where the combination is fitted) but not with N samples (where the gate applies it), and
# embedding_mean is the statistic SelfCheckGPT averages over samples.
COMBINED = tuple(s for s in SIGNALS if s != "embedding_max")


@dataclass(frozen=True)
class Calibration:
    """A fitted combination as plain numbers: P(not factual) = sigmoid(w . (x - mean) / scale + b) over
    `columns`. What the shipped scorer applies (numpy only), and what `make calibrate` writes."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(not factual) of each row of a (sentences x SIGNALS) array."""
        z = (x[:, [SIGNALS.index(c) for c in self.columns]] - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.weights) + self.intercept)))


@dataclass
class Combination:
    """Logistic regression on standardized signals: P(not factual | signals). `columns` selects signals."""

    columns: tuple[str, ...] = COMBINED
    # Inverse regularization. 0.02 (grouped 5-fold CV on the WikiBio dev half, 2026-12-03, `make calibrate`):
    # NonFact 89.40, NonFact* 73.89, calibration error 0.032. In the same folds 0.1 lost 2 NonFact* points and
    # 0.01 gained 1 but raised the calibration error over 0.05.
    c: float = 0.02
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

    def calibration(self) -> Calibration:
        """The fitted model as plain numbers (predicts what predict() does)."""
        if self._model is None:
            raise RuntimeError("fit() first")
        scaler, lr = self._model[0], self._model[1]
        return Calibration(tuple(self.columns), tuple(scaler.mean_.tolist()), tuple(scaler.scale_.tolist()),
                           tuple(lr.coef_[0].tolist()), float(lr.intercept_[0]))
