"""An adapter that is built on its first generation, so a run whose every request is found in the
generation store never loads the model.

The cache key needs only the model's digest and the runtime's version, build flags and settings
(`adapters.cached.runtime_key`), none of which needs the weights in memory; on a fully cached re-run the
model load is the one cost left that grows with the model, so it is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from adapters.base import Adapter
from edgeready.records import GenerationRequest, Response


class DeferredAdapter:
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

    def get(self) -> Adapter:
        if self._adapter is None:
            self._adapter = self._factory()
            # The factory may hand back an adapter that earlier gates already used: count from here.
            self._evaluated_before = self._count(self._adapter)
        return self._adapter

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        return self.get().generate(requests) if requests else []

    @property
    def prompt_tokens_evaluated(self) -> int | None:
        """Prompt tokens the built adapter evaluated through this wrapper; 0 while nothing was built."""
        if self._adapter is None:
            return 0
        now = self._count(self._adapter)
        return None if now is None or self._evaluated_before is None else now - self._evaluated_before

    @staticmethod
    def _count(adapter: Adapter) -> int | None:
        value = getattr(adapter, "prompt_tokens_evaluated", None)
        return value if isinstance(value, int) else None

    def describe(self) -> dict[str, object]:
        if self._adapter is not None:
            return {**self._adapter.describe(), "loaded": True}
        return {**self._description, "loaded": False,
                "load_s": None, "note": "not loaded: every request was served from the generation store"}

    def close(self) -> None:
        # The factory's owner (the run context) holds and closes the adapter it built.
        self._adapter = None
