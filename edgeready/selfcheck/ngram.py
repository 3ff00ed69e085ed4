"""SelfCheckGPT-Ngram: how surprising is each sentence to an n-gram model of the evidence?

As in SelfCheckGPT, one add-k smoothed n-gram model is fitted on the evidence passages AND the main
passage (so every token of the main passage has a count >= 1 and nothing is "unknown"); a sentence whose
words the evidence rarely or never uses gets a high negative log-probability.

Tokenizer: lowercase, then maximal runs of letters/digits, keeping inner apostrophes ("don't", "o'neil");
punctuation and whitespace are dropped. Unicode letters count as letters. No spaCy: punctuation carries no
factual content and dropping it keeps the model free of heavy dependencies.

n-gram probabilities are the textbook conditional add-k estimate
    P(w | ctx) = (c(ctx, w) + k) / (c(ctx) + k * (V + 1)),
with V the fitted vocabulary plus one slot for an unseen token (for n = 1, c(ctx) is the token total, which
is exactly SelfCheckGPT's unigram formula). Each passage is one token stream with n - 1 start symbols, and a
sentence of the main passage is scored in the context of the sentences before it.

Mapping to [0, 1]: score = 1 - exp(-x), with x the sentence's average (reduce="avg") or maximum
(reduce="max") negative log-probability. For "avg" this is one minus the geometric-mean token probability,
for "max" one minus the probability of the least likely token: monotone in x, 0 for a certain sentence and
tending to 1 as it becomes impossible. The raw values stay available in `score_detailed`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from edgeready.selfcheck.base import check_inputs

Reduce = Literal["avg", "max"]

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_START = "<s>"


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens; curly apostrophes are folded to ASCII so "don’t" == "don't"."""
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


class NgramModel:
    """Add-k smoothed n-gram counts over token streams."""

    def __init__(self, n: int = 1, k: float = 1.0) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if k <= 0:
            raise ValueError(f"k must be > 0 (add-k smoothing), got {k}")
        self.n = n
        self.k = k
        self.ngrams: Counter[tuple[str, ...]] = Counter()
        self.contexts: Counter[tuple[str, ...]] = Counter()
        self.vocab: set[str] = set()

    def fit(self, streams: Iterable[Sequence[str]]) -> NgramModel:
        for tokens in streams:
            padded = self.pad(tokens)
            self.vocab.update(tokens)
            for i in range(self.n - 1, len(padded)):
                gram = tuple(padded[i - self.n + 1 : i + 1])
                self.ngrams[gram] += 1
                self.contexts[gram[:-1]] += 1
        return self

    def pad(self, tokens: Sequence[str]) -> list[str]:
        return [_START] * (self.n - 1) + list(tokens)

    def logprob(self, context: Sequence[str], token: str) -> float:
        ctx = tuple(context[len(context) - (self.n - 1) :]) if self.n > 1 else ()
        # +1: the slot an unseen token takes, so probabilities over V + 1 outcomes sum to one.
        denom = self.contexts[ctx] + self.k * (len(self.vocab) + 1)
        return math.log((self.ngrams[(*ctx, token)] + self.k) / denom)


class NgramScorer:
    """SelfCheckGPT's n-gram scorer (unigram by default), in [0, 1] via 1 - exp(-neg_logprob)."""

    def __init__(self, n: int = 1, k: float = 1.0, reduce: Reduce = "max") -> None:
        if reduce not in ("avg", "max"):
            raise ValueError(f"reduce must be 'avg' or 'max', got {reduce!r}")
        NgramModel(n, k)  # validate n and k now, not at the first score() call
        self.n = n
        self.k = k
        self.reduce: Reduce = reduce
        self.name = f"ngram{n}-{reduce}"

    def preflight(self) -> None:
        """Nothing to check: the n-gram model is fitted on the evidence itself."""

    def load(self) -> NgramScorer:
        return self

    def score(self, sentences: Sequence[str], evidence: Sequence[str]) -> list[float]:
        return [float(d["score"]) for d in self.score_detailed(sentences, evidence)]

    def score_detailed(self, sentences: Sequence[str], evidence: Sequence[str]) -> list[dict[str, float]]:
        """Per sentence: avg_neg_logprob, max_neg_logprob (nats per token), n_tokens and score.

        A sentence with no word tokens (e.g. only punctuation) claims nothing: both values and the
        score are 0."""
        check_inputs(sentences, evidence)
        per_sentence = [tokenize(s) for s in sentences]
        main_stream = [tok for toks in per_sentence for tok in toks]
        model = NgramModel(self.n, self.k).fit([tokenize(p) for p in evidence] + [main_stream])

        out: list[dict[str, float]] = []
        history = model.pad([])
        for toks in per_sentence:
            negs = []
            for tok in toks:
                negs.append(-model.logprob(history, tok))
                history.append(tok)
            avg = sum(negs) / len(negs) if negs else 0.0
            worst = max(negs) if negs else 0.0
            x = avg if self.reduce == "avg" else worst
            out.append(
                {
                    "avg_neg_logprob": avg,
                    "max_neg_logprob": worst,
                    "n_tokens": float(len(negs)),
                    "score": _to_unit(x),
                }
            )
        return out


def _to_unit(neg_logprob: float) -> float:
    # -expm1(-x) == 1 - exp(-x) without cancellation for small x; clamp guards float rounding.
    return min(1.0, max(0.0, -math.expm1(-neg_logprob)))
