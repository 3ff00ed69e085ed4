"""The sentence-scorer protocol shared by the SelfCheckGPT variants, and the helpers the scorers share.
The factory that builds a scorer by name lives in the package (`edgeready.selfcheck.make_scorer`), so this
module imports no scorer.

A scorer judges the sentences of ONE main passage against `evidence`: the N passages sampled from the
same model for the same prompt (SelfCheckGPT proper), or a single reference passage. Every score lies in
[0, 1] and higher means more likely hallucinated, so that callers can threshold any scorer the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

# The offline scorer with the best NonFact AUC-PR on the WikiBio dev set, and the only one whose score is a
# probability (see docs/HALLUCINATION.md).
DEFAULT_SCORER = "calibrated"
SCORER_NAMES = ("calibrated", "nli", "ngram", "embedding")


@runtime_checkable
class SentenceScorer(Protocol):
    name: str

    def preflight(self) -> None:
        """Check cheaply (no model load) that the scorer can run here; raise ScorerUnavailable otherwise."""
        ...

    def load(self) -> object:
        """Load what the scorer needs now (raise ScorerUnavailable with a fix when it cannot)."""
        ...

    def score(self, sentences: Sequence[str], evidence: Sequence[str]) -> list[float]:
        """One score in [0, 1] per sentence (1 = likely hallucinated), in the order given."""
        ...


def check_inputs(sentences: Sequence[str], evidence: Sequence[str]) -> None:
    """Shared argument checks: a bare str would silently be scored character by character."""
    if isinstance(sentences, str) or isinstance(evidence, str):
        raise TypeError("sentences and evidence must be sequences of strings, not a single string")
    if sentences and not evidence:
        raise ValueError("evidence is empty: give at least one sampled or reference passage")


def force_offline() -> None:
    """Forbid hub downloads before transformers / huggingface_hub are imported (they read these once).

    setdefault, so a user who deliberately set them keeps their choice; loaders also pass
    local_files_only=True, which holds even if the hub library was imported earlier."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def set_torch_threads(threads: int | None) -> None:
    """Opt-in: torch's thread count is process-wide, so it changes only when a caller asks.

    On a shared 2-core box, 1 thread was faster and far steadier than torch's default of 2, which
    spin-waits when another process holds a core."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
