"""An adapter that is built on its first generation, so a run whose every request is found in the
generation store never loads the model.

The cache key needs only the model's digest and the runtime's version, build flags and settings
(`edgeready.adapters.cached.runtime_key`), none of which needs the weights in memory; on a fully cached re-run the
model load is the one cost left that grows with the model, so it is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from edgeready.adapters.base import Adapter, AdapterStats, AdapterWrapper
from edgeready.records import GenerationRequest, Response


class DeferredAdapter(AdapterWrapper):
    """`factory()` builds the real adapter when a generation is first asked for. `describe()` before that
    returns `description` with `loaded: False`. The factory's owner closes what it built."""

    def __init__(self, factory: Callable[[], Adapter], *, name: str, description: dict[str, Any]):
        self._factory = factory
        self._adapter: Adapter | None = None
        self._evaluated_before: int | None = 0
        self.name = name
        self._description = description

    @property
    def loaded(self) -> bool:
        return self._adapter is not None

    @property
    def inner(self) -> Adapter:
        if self._adapter is None:
            self._adapter = self._factory()
            # The factory may hand back an adapter that earlier gates already used: count from here.
            self._evaluated_before = self._adapter.stats().prompt_tokens_evaluated
        return self._adapter

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        return self.inner.generate(requests) if requests else []

    def stats(self) -> AdapterStats:
        """The built adapter's counters, its evaluated prompt tokens counted from when this wrapper built it;
        0 while nothing was built."""
        if self._adapter is None:
            return AdapterStats(prompt_tokens_evaluated=0)
        inner = self._adapter.stats()
        now, before = inner.prompt_tokens_evaluated, self._evaluated_before
        evaluated = None if now is None or before is None else now - before
        return replace(inner, prompt_tokens_evaluated=evaluated)

    def describe(self) -> dict[str, object]:
        if self._adapter is not None:
            return {**self._adapter.describe(), "loaded": True}
        return {**self._description, "loaded": False,
                "load_s": None, "note": "not loaded: every request was served from the generation store"}

    def close(self) -> None:
        # The factory's owner (the run's adapter pool) holds and closes the adapter it built.
        self._adapter = None
