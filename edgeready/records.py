"""The values that flow through a gate: items in, requests to an adapter, responses out.

Data flows one way: candidate -> adapter -> responses -> scorer -> measurement -> threshold -> verdict.
These are plain frozen dataclasses so that every stage can be unit-tested without a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Complexity = Literal["simple", "complex"]


@dataclass(frozen=True)
class QAItem:
    """One question with every accepted answer string.

    `hops` is the length of the reasoning chain (WebQSP's InferentialChain, the embedded set's
    relation path); `complexity` derives from it: 1 hop is simple, more is complex.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    hops: int
    source: str
    # Optional context the prompt may show (never the answer); empty for WebQSP.
    topic: str = ""

    @property
    def complexity(self) -> Complexity:
        return "simple" if self.hops <= 1 else "complex"


@dataclass(frozen=True)
class GenerationRequest:
    """What every adapter accepts. Greedy (temperature 0) and seeded by default, so runs repeat."""

    prompt: str
    max_tokens: int = 32
    temperature: float = 0.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    # Chat-style requests carry messages; the adapter applies the model's chat template.
    messages: tuple[tuple[str, str], ...] = ()
    # Free-form tag for routing and reports (e.g. "simple"/"complex"); adapters may ignore it.
    tag: str = ""
    # The start of `prompt` that many requests share (a few-shot preamble): a hint that lets an adapter
    # evaluate it once and reuse it. It changes how the prompt is batched, not what is asked.
    shared_prefix: str = ""


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds measured around one request, and the split llama.cpp reports."""

    total_s: float
    prompt_eval_s: float | None = None
    generation_s: float | None = None
    # From the request's start (batched: its admission to a slot, so the prompts of requests admitted with it
    # count, as in a server's batch) to its first generated token.
    first_token_s: float | None = None


@dataclass(frozen=True)
class Response:
    """What every adapter returns, one per request, in order."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    timings: Timings
    finish_reason: str = "stop"
    # One log-probability per generated token, when the request asked for them.
    token_logprobs: tuple[float, ...] | None = None
    # Where it was answered (device, server) and anything an adapter wants to record.
    served_by: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def mean_logprob(self) -> float | None:
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)
