"""SelfCheckGPT-style sentence scorers (calibrated, nli, ngram, embedding): score in [0, 1], 1 = likely
hallucinated; `calibrated` (the default) is the estimated probability that the sentence is not factual.

Heavy dependencies (torch, transformers, sentence-transformers) are imported only when a scorer that
needs them is first used, so `ngram` and the validation helpers stay light.
"""

from edgeready.errors import ScorerUnavailable
from edgeready.selfcheck.base import DEFAULT_SCORER, SCORER_NAMES, SentenceScorer


def make_scorer(name: str = DEFAULT_SCORER, **options: object) -> SentenceScorer:
    """Build a scorer by name; `options` go to its constructor (e.g. `model=`, `batch_size=`, `n=`).

    Imports are deferred so that asking for `ngram` never pulls in torch or transformers."""
    key = name.strip().lower()
    if key == "calibrated":
        from edgeready.selfcheck.calibrated import CalibratedScorer

        return CalibratedScorer(**options)  # type: ignore[arg-type]
    if key == "ngram":
        from edgeready.selfcheck.ngram import NgramScorer

        return NgramScorer(**options)  # type: ignore[arg-type]
    if key == "embedding":
        from edgeready.selfcheck.embedding import EmbeddingScorer

        return EmbeddingScorer(**options)  # type: ignore[arg-type]
    if key == "nli":
        from edgeready.selfcheck.nli import NLIScorer

        return NLIScorer(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown sentence scorer {name!r}; expected one of {', '.join(SCORER_NAMES)}")


__all__ = ["DEFAULT_SCORER", "SCORER_NAMES", "ScorerUnavailable", "SentenceScorer", "make_scorer"]
