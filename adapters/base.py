"""The one adapter protocol: a batch of generation requests in, one response per request out.

Installed as `edgeready.adapters` (the folder stays at the top of the repository, as the design lays it out).
Everything a gate may read from an adapter is declared here: `generate`, `describe` (provenance for reports),
`stats` (the counters adapters keep, typed) and `close`. Wrappers (the generation store, the deferred model
load) derive from `AdapterWrapper`, which forwards all of them to the adapter they wrap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Protocol, runtime_checkable

from edgeready.records import GenerationRequest, Response


@dataclass(frozen=True)
class AdapterStats:
    """Counters over an adapter's life. A counter the adapter does not keep is None (or empty)."""

    # Device: prompt tokens llama.cpp evaluated, and those a kept prompt state let it skip.
    prompt_tokens_evaluated: int | None = None
    prompt_tokens_reused: int | None = None
    # Generation store: requests answered from it and requests generated.
    cache_hits: int | None = None
    cache_misses: int | None = None
    # Offload router: where requests were answered, fallbacks to the device and why, bytes on the network.
    served_by_device: int | None = None
    served_by_server: int | None = None
    fallbacks: int | None = None
    fallback_errors: tuple[str, ...] = ()
    bytes_sent: int | None = None
    bytes_received: int | None = None

    def over(self, inner: AdapterStats) -> AdapterStats:
        """These counters laid over `inner`'s: a wrapper's own counters win, the rest come from inside."""
        mine = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) not in (None, ())}
        return replace(inner, **mine)


@dataclass(frozen=True)
class Loglikelihood:
    """log P(continuation | context) in nats, whether greedy decoding would have produced the continuation,
    how many tokens it has and its context had: what lm-eval's loglikelihood requests need."""

    logprob: float
    greedy: bool
    tokens: int
    context_tokens: int


def continuation_tokens(context: str, continuation: str, encode: Callable[[str], list[int]],
                        name: str) -> tuple[list[int], list[int]]:
    """The context's tokens and the continuation's, split as lm-eval's HF model splits them: a context's trailing
    spaces move to the continuation, and the continuation's tokens are those the whole text has beyond the
    context's (`encode` adds BOS as the model reads a prompt)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    head, whole = encode(context), encode(context + continuation)
    if len(whole) <= len(head) or whole[: len(head)] != head:
        from edgeready.errors import MeasurementError

        raise MeasurementError(f"{name}: the continuation {continuation[:40]!r} adds no tokens of its own to its "
                               "context (or merges with its end); it cannot be scored")
    return head, whole[len(head):]


@runtime_checkable
class ScoresText(Protocol):
    """An adapter that reads its model's token probabilities (the in-process device adapter): lm-eval's
    multiple-choice and perplexity tasks need this, generation alone does not."""

    name: str

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[Loglikelihood]: ...

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Loglikelihood]: ...


def text_scorer(adapter: Adapter) -> ScoresText:
    """The adapter under any wrappers that reads token probabilities. Log-likelihoods are not stored: they
    cost one forward pass, and the store keys generations. MeasurementError when none does."""
    inner: object = adapter
    while not isinstance(inner, ScoresText) and isinstance(inner, AdapterWrapper):
        inner = inner.inner
    if not isinstance(inner, ScoresText):
        from edgeready.errors import MeasurementError

        raise MeasurementError(f"{adapter.name}: its adapter cannot read token probabilities (only the in-process "
                               "device adapter can): log-likelihood tasks need a device candidate")
    return inner


@runtime_checkable
class Adapter(Protocol):
    """Device (llama.cpp in-process), server (OpenAI-compatible HTTP) and offload (a router) all
    implement this. `describe()` returns provenance for reports: runtime, versions, build flags."""

    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]: ...

    def describe(self) -> dict[str, object]: ...

    def stats(self) -> AdapterStats: ...

    def close(self) -> None: ...


class AdapterWrapper:
    """An adapter around another one. Forwards `describe`, `stats` and `close`; subclasses change `generate`
    and lay their own counters over the inner ones."""

    def __init__(self, inner: Adapter):
        self._inner = inner
        self.name = inner.name

    @property
    def inner(self) -> Adapter:
        return self._inner

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        return self.inner.generate(requests)

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    def stats(self) -> AdapterStats:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()
