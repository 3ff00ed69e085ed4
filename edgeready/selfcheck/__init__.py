"""SelfCheckGPT-style sentence scorers (nli, ngram, embedding): score in [0, 1], 1 = likely hallucinated.

Heavy dependencies (torch, transformers, sentence-transformers) are imported only when a scorer that
needs them is first used, so `ngram` and the validation helpers stay light.
"""

from edgeready.selfcheck.base import (
    DEFAULT_SCORER,
    SCORER_NAMES,
    ScorerUnavailable,
    SentenceScorer,
    make_scorer,
)

__all__ = ["DEFAULT_SCORER", "SCORER_NAMES", "ScorerUnavailable", "SentenceScorer", "make_scorer"]
