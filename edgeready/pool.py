"""The adapter pool: what runs the models a gate run needs.

It resolves candidates to verified model files (`ResolvedModel`), opens one adapter at a time for the pair
being measured (and the llama.cpp server a server or offload pair needs), puts the generation store in front
of it where outputs depend only on the request, and closes all of it. At most two adapters are open at a time
(a candidate and the baseline it is compared with, answering the same rounds); tests are ordered by pair, so a
model or server loads once per pair and memory stays bounded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeready.adapters.base import Adapter
from edgeready.candidates import Candidate, ResolvedModel, materialize, resolve_candidate
from edgeready.schema import Pair

if TYPE_CHECKING:  # imported late: a configuration error must not pay for llama.cpp, gguf or sqlite
    from edgeready.adapters.openai_server import OpenAIServerAdapter
    from edgeready.cache import GenerationStore
    from edgeready.gguf_info import GGUFSummary
    from edgeready.phone import PhoneServer
    from edgeready.server_process import LlamaCppServer


MAX_OPEN = 2
# Requests per slot in one call to a batched device adapter through the store: enough to keep its slots full
# (continuous batching within a call), few enough that an interrupted run loses little (a chunk is committed
# when it is done).
REQUESTS_PER_SLOT = 4


@dataclass
class _Open:
    """The adapter of the pair being measured, and the server it started (stopped on release)."""

    key: tuple[Any, ...]
    adapter: Adapter
    server: LlamaCppServer | PhoneServer | None = None


@dataclass
class AdapterPool:
    cache_dir: Path
    candidates_dir: Path
    use_cache: bool = True
    # The xdist worker this process is (0 serially): it picks the worker's own endpoint of a pool.
    worker: int = 0
    _models: dict[str, ResolvedModel] = field(default_factory=dict)
    _summaries: dict[str, GGUFSummary] = field(default_factory=dict)
    # Open adapters, least recently used first.
    _open: dict[tuple[Any, ...], _Open] = field(default_factory=dict)
    _store: GenerationStore | None = None
    _current: _Open | None = None

    # -- models -----------------------------------------------------------------------------------
    def model(self, candidate: Candidate) -> ResolvedModel:
        if candidate.name not in self._models:
            self._models[candidate.name] = materialize(candidate, self.cache_dir)
        return self._models[candidate.name]

    def gguf(self, candidate: Candidate) -> GGUFSummary:
        from edgeready.gguf_info import read_gguf
        from edgeready.hf import checkpoint_summary

        if candidate.name not in self._summaries:
            # A checkpoint's footprint in the same shape (weights from its safetensors headers).
            read = checkpoint_summary if candidate.format == "hf" else read_gguf
            self._summaries[candidate.name] = read(self.model(candidate).path)
        return self._summaries[candidate.name]

    def part(self, owner: Candidate, ref: str) -> Candidate:
        """A candidate named by another (an offload candidate's parts, a derived model's base): a name in
        candidates/, or a manifest path relative to the naming manifest."""
        if ref.endswith((".yaml", ".yml")) and owner.source is not None and not Path(ref).is_absolute():
            ref = str(owner.source.parent / ref)
        return resolve_candidate(ref, self.candidates_dir)

    def device_candidate(self, pair: Pair) -> Candidate:
        if pair.candidate.offload is not None:
            return self.part(pair.candidate, pair.candidate.offload.device)
        return pair.candidate

    def device_serial(self, pair: Pair) -> str | None:
        """The phone of the target's pool this worker owns (None: the target names none). A target that runs
        the model on the phone needs a phone per worker: two runs on one phone would measure each other."""
        serials = pair.target.profile.adb_serials
        phone = pair.target.profile.phone
        if phone is not None and phone.serial is None and self.worker >= max(len(serials), 1):
            from edgeready.errors import PhoneError

            raise PhoneError(f"xdist worker {self.worker} has no phone of its own ({len(serials)} in "
                             f"profile.adb_serials of {pair.target.name}): run with -n {max(len(serials), 1)} at "
                             "most, or list more phones")
        return serials[self.worker % len(serials)] if serials else None

    def provenance(self, pair: Pair) -> dict[str, Any]:
        cand = self.device_candidate(pair) if pair.role == "offload" else pair.candidate
        if cand.format not in ("gguf", "hf"):
            return {"endpoint": cand.endpoint.model_dump() if cand.endpoint else None}
        out: dict[str, Any] = {"sha256": self.model(cand).sha256}
        phone = self.phone()
        if pair.target.profile.phone is not None and phone is not None:
            out["measured_on"] = phone.measured_on()
        return out

    # -- adapters ---------------------------------------------------------------------------------
    def live(self, pair: Pair) -> Adapter:
        prof = pair.target.profile
        key = (pair.candidate.name, pair.role, prof.threads, prof.n_ctx, prof.n_batch, prof.parallel)
        opened = self._open.pop(key, None)
        if opened is None:
            while len(self._open) >= MAX_OPEN:
                self._close(self._open.pop(next(iter(self._open))))
            opened = self._open_for(pair, key)
        self._open[key] = opened  # most recently used last
        self._current = opened
        return opened.adapter

    def cached(self, pair: Pair) -> Adapter:
        """Device role only: a server's or router's outputs depend on more than the request (a phone's on its
        server build, which the store's key cannot name)."""
        if not self.use_cache or pair.role != "device" or pair.target.profile.phone is not None:
            return self.live(pair)
        from edgeready.adapters.cached import CachedAdapter, runtime_key
        from edgeready.adapters.deferred import DeferredAdapter

        prof, cand = pair.target.profile, pair.candidate
        if cand.format == "hf":
            return self._cached_checkpoint(pair)
        runtime = runtime_key(n_ctx=prof.n_ctx, n_batch=prof.n_batch, prompt_style=cand.prompt_style,
                              parallel=prof.parallel)
        model = self.model(cand)
        # The model is loaded on the first miss only: a fully cached re-run never loads it.
        device = DeferredAdapter(lambda: self.live(pair), name=cand.name, description={
            "adapter": "llama-cpp-device", "runtime": runtime["runtime"], "llama_cpp_python": runtime["version"],
            "system_info": runtime["system_info"], "model_path": str(model.path),
            "threads": prof.threads, "n_ctx": prof.n_ctx, "prompt_style": cand.prompt_style,
            "parallel": prof.parallel})
        store = self.store()
        assert store is not None
        # A batched adapter needs several requests per call to fill its slots (one at a time it decodes one
        # sequence).
        return CachedAdapter(device, store, model_sha256=model.sha256, runtime=runtime,
                             chunk_size=REQUESTS_PER_SLOT * prof.parallel if prof.parallel > 1 else 1)

    def _cached_checkpoint(self, pair: Pair) -> Adapter:
        """A `format: hf` candidate behind the store, keyed by the checkpoint's digest and transformers' runtime."""
        from edgeready.adapters.cached import CachedAdapter, hf_runtime_key
        from edgeready.adapters.deferred import DeferredAdapter
        from edgeready.adapters.transformers_device import RUNTIME

        prof, cand = pair.target.profile, pair.candidate
        runtime = hf_runtime_key(threads=prof.threads, prompt_style=cand.prompt_style)
        model = self.model(cand)
        device = DeferredAdapter(lambda: self.live(pair), name=cand.name, description={
            "adapter": "transformers-device", "runtime": RUNTIME, "transformers": runtime["version"],
            "model_path": str(model.path), "threads": prof.threads, "n_ctx": prof.n_ctx,
            "prompt_style": cand.prompt_style, "parallel": 1})
        store = self.store()
        assert store is not None
        return CachedAdapter(device, store, model_sha256=model.sha256, runtime=runtime)

    def store(self) -> GenerationStore | None:
        if not self.use_cache:
            return None
        if self._store is None:
            from edgeready.cache import GenerationStore, store_path

            self._store = GenerationStore(store_path(self.cache_dir))
        return self._store

    def server_pid(self) -> int | None:
        """The server of the adapter opened or used last."""
        current = self._current
        return current.server.pid if current is not None and current.server is not None else None

    def phone(self) -> PhoneServer | None:
        """The phone's server of the adapter opened or used last, when it runs on a phone."""
        from edgeready.phone import PhoneServer

        server = self._current.server if self._current is not None else None
        return server if isinstance(server, PhoneServer) else None

    def release(self) -> None:
        """Close every open adapter and stop their servers."""
        self._current = None
        while self._open:
            self._close(self._open.pop(next(iter(self._open))))

    @staticmethod
    def _close(opened: _Open) -> None:
        try:
            opened.adapter.close()
        finally:
            if opened.server is not None:
                result = opened.server.stop()
                # A phone's server lists what it could not do (a phone that dropped: the next run cleans it).
                for problem in result if isinstance(result, list) else ():
                    warnings.warn(problem, stacklevel=2)

    def close(self) -> None:
        self.release()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _device_adapter(self, cand: Candidate, pair: Pair) -> Adapter:
        from edgeready.adapters.llama_cpp_device import LlamaCppDevice

        prof = pair.target.profile
        if cand.format == "hf":  # one sequence at a time: `parallel` batches llama.cpp's decoding only
            from edgeready.adapters.transformers_device import TransformersDevice

            return TransformersDevice(self.model(cand).path, threads=prof.threads, n_ctx=prof.n_ctx,
                                      name=cand.name, prompt_style=cand.prompt_style)
        return LlamaCppDevice(self.model(cand).path, threads=prof.threads, n_ctx=prof.n_ctx, n_batch=prof.n_batch,
                              name=cand.name, prompt_style=cand.prompt_style, parallel=prof.parallel)

    def _server_adapter(self, cand: Candidate, pair: Pair) -> tuple[OpenAIServerAdapter, LlamaCppServer | None]:
        from edgeready.adapters.openai_server import OpenAIServerAdapter

        if cand.endpoint is not None:
            ep = cand.endpoint
            return OpenAIServerAdapter(ep.url_for(self.worker), ep.model, api=ep.api, api_key_env=ep.api_key_env,
                                       concurrency=ep.concurrency, timeout_s=ep.timeout_s,
                                       max_retries=ep.max_retries, max_response_bytes=ep.max_response_bytes,
                                       name=cand.name), None
        from edgeready.server_process import LlamaCppServer

        prof = pair.target.profile
        server = LlamaCppServer(self.model(cand).path, n_ctx=prof.n_ctx, threads=prof.threads,
                                n_batch=prof.n_batch, model_alias=cand.name).start()
        api = "completions" if cand.prompt_style == "few-shot" else "chat"
        return OpenAIServerAdapter(server.base_url, server.model_alias, api=api, name=cand.name), server

    def _open_for(self, pair: Pair, key: tuple[Any, ...]) -> _Open:
        cand = pair.candidate
        if pair.role == "device" and pair.target.profile.phone is not None:
            return self._open_phone(pair, key)
        if pair.role == "device":
            return _Open(key, self._device_adapter(cand, pair))
        if pair.role == "server":
            adapter, server = self._server_adapter(cand, pair)
            return _Open(key, adapter, server)
        return self._open_offload(pair, key)

    def _open_phone(self, pair: Pair, key: tuple[Any, ...]) -> _Open:
        """The candidate in the on-device server of the phone this worker owns, reached through adb forward;
        streamed, so the first token is timed (edgeready/phone.py)."""
        from edgeready.adapters.openai_server import OpenAIServerAdapter
        from edgeready.errors import PhoneError
        from edgeready.phone import PhoneAdapter, PhoneServer

        prof, cand = pair.target.profile, pair.candidate
        assert prof.phone is not None
        serial = prof.phone.serial or self.device_serial(pair)
        for other in self._open.values():  # a second server would take the first's port, pid file and cores
            if isinstance(other.server, PhoneServer) and other.server.serial in (serial, None):
                raise PhoneError(f"phone {serial or other.server.serial} ({prof.device}): {other.server.alias} "
                                 f"already runs there, and one server at a time runs on a phone: compare {cand.name} "
                                 "with a baseline through an earlier run's reports folder (--baseline reports/...)")
        model = self.model(cand)
        server = PhoneServer(prof.phone, model.path, model.sha256, prof.device,
                             {"threads": prof.threads, "n_ctx": prof.n_ctx, "n_batch": prof.n_batch,
                              "parallel": prof.parallel}, cand.name,
                             serial=serial).start()
        api = "completions" if cand.prompt_style == "few-shot" else "chat"
        try:
            adapter = PhoneAdapter(OpenAIServerAdapter(
                server.base_url, cand.name, api=api, concurrency=prof.parallel,
                timeout_s=prof.phone.request_timeout_s, name=cand.name, stream=True), server)
        except BaseException:
            server.stop()
            raise
        return _Open(key, adapter, server)

    def _open_offload(self, pair: Pair, key: tuple[Any, ...]) -> _Open:
        from edgeready.adapters.offload import Network, OffloadAdapter

        cand, spec, net = pair.candidate, pair.candidate.offload, pair.target.profile.network
        assert spec is not None and net is not None  # the schemas guarantee both for an offload pair
        device = self._device_adapter(self.part(cand, spec.device), pair)
        server_adapter: OpenAIServerAdapter | None = None
        server: LlamaCppServer | None = None
        server_error = None
        if spec.policy != "never":
            try:
                server_adapter, server = self._server_adapter(self.part(cand, spec.server), pair)
            except Exception as exc:  # the offload adapter answers on the device and counts each fallback
                server_error = f"{type(exc).__name__}: {exc}"[:500]
        adapter = OffloadAdapter(device, server_adapter, policy=spec.policy, cascade_threshold=spec.cascade_threshold,
                                 network=Network(net.rtt_ms, net.uplink_mbps, net.downlink_mbps, net.loss),
                                 name=cand.name, server_error=server_error)
        return _Open(key, adapter, server)
