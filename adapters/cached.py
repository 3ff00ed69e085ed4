"""An adapter that answers repeated requests from the generation store and generates only the rest.

Responses are stored as they are produced, a chunk of requests at a time (one for the single-stream device
adapter, 4 x parallel for a batched one: edgeready/pool.py), so a run killed half-way keeps its finished
work and the next run generates only what is missing. Cached responses keep the timings of the run
that produced them; `meta["cache"]` says "hit" or "miss", and latency or energy gates must measure
live generations only (wrap the adapter with the cache for accuracy-type gates, not for those).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeready.adapters.base import Adapter, AdapterStats, AdapterWrapper
from edgeready.cache import SCHEMA_VERSION, GenerationStore, generation_key, response_from_json, response_to_json
from edgeready.records import GenerationRequest, Response


class CachedAdapter(AdapterWrapper):
    """Wraps `inner` (any Adapter) with `store`. `model_sha256` and `runtime` enter every key (see
    edgeready/cache.py); `chunk_size` requests go to `inner.generate` per call, each chunk committed
    before the next starts. 1 costs nothing with the single-stream device adapter, whose KV-cache prefix
    reuse lives across calls; a batched one (parallel > 1) needs several requests per call to batch them."""

    def __init__(self, inner: Adapter, store: GenerationStore, *, model_sha256: str, runtime: Mapping[str, Any],
                 chunk_size: int = 1):
        if len(model_sha256) != 64 or any(c not in "0123456789abcdef" for c in model_sha256):
            raise ValueError(f"model_sha256 must be 64 lowercase hex digits, got {model_sha256!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        super().__init__(inner)
        self.store = store
        self.model_sha256 = model_sha256
        self.runtime = dict(runtime)
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0

    def key(self, request: GenerationRequest) -> str:
        return generation_key(request, model_sha256=self.model_sha256, runtime=self.runtime)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Response]:
        keys = [self.key(r) for r in requests]
        found = self.store.get_many(keys)
        # The first request of each missing key is generated; a repeat of it within this batch is
        # then a hit on what was just stored.
        first_of: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in found and key not in first_of:
                first_of[key] = i
        todo = list(first_of.values())
        for start in range(0, len(todo), self.chunk_size):
            idx = todo[start : start + self.chunk_size]
            batch = [requests[i] for i in idx]
            out = self.inner.generate(batch)
            if len(out) != len(batch):
                raise RuntimeError(f"adapter {self.inner.name} returned {len(out)} responses for {len(batch)} requests")
            for i, response in zip(idx, out, strict=True):
                clean = _without_cache_tag(response)
                self.store.put(keys[i], clean, requests[i])
                # Return what a later hit will return (tuples in meta become lists, say), so a
                # report never depends on whether its run generated or reused a response.
                found[keys[i]] = response_from_json(response_to_json(clean))
        generated = set(todo)
        self.misses += len(todo)
        self.hits += len(requests) - len(todo)
        return [_tagged(found[key], "miss" if i in generated else "hit") for i, key in enumerate(keys)]

    def describe(self) -> dict[str, object]:
        return {
            **self.inner.describe(),
            "cache": {
                "path": str(self.store.path),
                "schema": SCHEMA_VERSION,
                "model_sha256": self.model_sha256,
                "hits": self.hits,
                "misses": self.misses,
            },
        }

    def stats(self) -> AdapterStats:
        return AdapterStats(cache_hits=self.hits, cache_misses=self.misses).over(self.inner.stats())

    # close(): the inner adapter only; the store may be shared by several adapters and its owner closes it.


def device_runtime(device: Any) -> dict[str, object]:
    """The runtime part of the key for a built `LlamaCppDevice` (see `runtime_key`)."""
    return runtime_key(n_ctx=device.n_ctx, n_batch=device.chunk, prompt_style=device.prompt_style,
                       parallel=device.parallel)


def runtime_key(*, n_ctx: int, n_batch: int, prompt_style: str | None, parallel: int = 1) -> dict[str, object]:
    """The runtime part of the key for `LlamaCppDevice`, from the settings alone (no model is loaded):
    runtime, version, build flags and the settings that change outputs.

    - n_batch (the prompt chunk, min(n_batch, n_ctx)): llama.cpp's kernels differ by batch shape, so
      logits may differ.
    - n_ctx: bounds which requests run at all; kept so a changed profile never reuses a doubtful row.
    - prompt_style: the device sends a request's few-shot `prompt` or its chat `messages` according to
      it, so one request gives different texts under the two styles.
    - numpy: sampled requests (temperature > 0) draw from NumPy's Generator, whose streams NumPy does
      not promise to keep across versions.
    - parallel (> 1 only, so single-stream keys stay as they were): a batched step decodes a fixed number of
      rows (parallel rounded up to 4), and llama.cpp's CPU kernels round differently with the row count, so a
      batched answer can differ from the single-stream one and from another parallel's; the batched
      decoder's source joins the key too.
    - threads is left out: llama.cpp's CPU matrix kernels split work by output rows, so each logit is
      computed the same way whatever the thread count (tests/test_device_adapter.py checks greedy texts
      at 1 vs 2 threads; sampled texts matched too in our checks). A setting that could change this
      (GPU offload, another backend) must join `settings`.
    """
    import llama_cpp

    from edgeready.adapters import llama_cpp_device

    # The decoding loop is ours: any change to it (sampling, stops, chunking) must miss the cache.
    decoder = _source_digest(llama_cpp_device)
    settings: dict[str, object] = {"n_ctx": n_ctx, "n_batch": min(n_batch, n_ctx), "prompt_style": prompt_style}
    if parallel > 1:
        from edgeready.adapters import llama_cpp_batch

        settings["parallel"] = parallel
        decoder += hashlib.sha256(Path(inspect.getfile(llama_cpp_batch)).read_bytes()).hexdigest()[:16]
    return {
        "decoder_source": decoder,
        "runtime": llama_cpp_device.RUNTIME,
        "version": llama_cpp.__version__,
        "system_info": llama_cpp_device.system_info(),
        "settings": settings,
        "numpy": np.__version__,
    }


def hf_runtime_key(*, threads: int, prompt_style: str | None) -> dict[str, object]:
    """The runtime part of the key for `TransformersDevice` (a `format: hf` checkpoint): transformers and torch
    versions, the decoding loop's source, float32 and the thread count (torch's CPU reductions may split by
    thread), and the prompt style."""
    import torch
    import transformers

    from edgeready.adapters import transformers_device

    return {
        "decoder_source": _source_digest(transformers_device),
        "runtime": transformers_device.RUNTIME,
        "version": transformers.__version__,
        "torch": torch.__version__,
        "settings": {"dtype": "float32", "threads": threads, "prompt_style": prompt_style},
        "numpy": np.__version__,
    }


def _source_digest(module: object) -> str:
    """The decoding loop's source and the shared sampler's (adapters/sampling.py): a change to either misses."""
    from edgeready.adapters import sampling

    files = (inspect.getfile(module), inspect.getfile(sampling))  # type: ignore[arg-type]
    return hashlib.sha256(b"".join(Path(f).read_bytes() for f in files)).hexdigest()[:16]


def _without_cache_tag(response: Response) -> Response:
    if "cache" not in response.meta:
        return response
    return dataclasses.replace(response, meta={k: v for k, v in response.meta.items() if k != "cache"})


def _tagged(response: Response, state: str) -> Response:
    return dataclasses.replace(response, meta={**response.meta, "cache": state})
