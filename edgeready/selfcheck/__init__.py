"""SelfCheckGPT-style sentence scorers (calibrated, nli, ngram, embedding): score in [0, 1], 1 = likely
hallucinated; `calibrated` (the default) is the estimated probability that the sentence is not factual.

Heavy dependencies (torch, transformers, sentence-transformers) are imported only when a scorer that
needs them is first used, so `ngram` and the validation helpers stay light.
"""

import inspect

from edgeready.errors import ScorerUnavailable
from edgeready.selfcheck.base import DEFAULT_SCORER, SCORER_NAMES, SentenceScorer


def scorer_class(name: str) -> type:
    """The scorer class a name stands for. Its module is imported here, on demand; the modules import nothing
    heavy at the top, so asking for `ngram` never pulls in torch or transformers."""
    key = name.strip().lower()
    if key == "calibrated":
        from edgeready.selfcheck.calibrated import CalibratedScorer

        return CalibratedScorer
    if key == "ngram":
        from edgeready.selfcheck.ngram import NgramScorer

        return NgramScorer
    if key == "embedding":
        from edgeready.selfcheck.embedding import EmbeddingScorer

        return EmbeddingScorer
    if key == "nli":
        from edgeready.selfcheck.nli import NLIScorer

        return NLIScorer
    raise ValueError(f"unknown sentence scorer {name!r}; expected one of {', '.join(SCORER_NAMES)}")


def scorer_options(name: str) -> tuple[str, ...]:
    """The options a scorer's constructor takes, in order (what a target's `scorer_options` may set)."""
    return tuple(inspect.signature(scorer_class(name)).parameters)


def make_scorer(name: str = DEFAULT_SCORER, **options: object) -> SentenceScorer:
    """Build a scorer by name; `options` go to its constructor (e.g. `model=`, `batch_size=`, `n=`)."""
    return scorer_class(name)(**options)


__all__ = ["DEFAULT_SCORER", "SCORER_NAMES", "ScorerUnavailable", "SentenceScorer", "make_scorer", "scorer_class",
           "scorer_options"]
