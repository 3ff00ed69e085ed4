"""The one adapter protocol: a batch of generation requests in, one response per request out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from edgeready.records import GenerationRequest, Response


@runtime_checkable
class Adapter(Protocol):
    """Device (llama.cpp in-process), server (OpenAI-compatible HTTP) and offload (a router) all
    implement this. `describe()` returns provenance for reports: runtime, versions, build flags."""

    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]: ...

    def describe(self) -> dict[str, object]: ...

    def close(self) -> None: ...
