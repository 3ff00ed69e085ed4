"""One gate run: the (candidate x target) pairs, the models they load, and the results they produce.

Everything pytest-specific lives in plugin.py; this module can drive gates from plain Python.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeready.candidates import Candidate, materialize, resolve_candidate
from edgeready.measurement import GateResult, Measurement, MeasurementError
from edgeready.records import QAItem, Response
from edgeready.targets import Role, Target

if TYPE_CHECKING:  # the gguf package takes a quarter second to import; config errors must be fast
    from edgeready.gguf_info import GGUFSummary

# Conformance first: it is cheap, and a candidate that fails it skips the others.
GATES = ("conformance", "accuracy", "hallucination", "memory", "energy", "latency")


@dataclass(frozen=True)
class Pair:
    candidate: Candidate
    target: Target

    @property
    def id(self) -> str:
        return f"{self.candidate.name}@{self.target.key}"

    @property
    def role(self) -> Role:
        return self.target.role


def runs_on(candidate: Candidate, role: Role) -> bool:
    """GGUF candidates run in-process on a device or behind a llama.cpp server the run starts;
    endpoints are servers already running; offload candidates are judged by offload targets."""
    if candidate.format == "gguf":
        return role in ("device", "server")
    if candidate.format == "endpoint":
        return role == "server"
    return role == "offload"


@dataclass
class Active:
    """The adapter of the pair being measured, and what it started (a server process)."""

    key: tuple[Any, ...]
    adapter: Any
    server: Any = None  # LlamaCppServer started for this pair, stopped on close


@dataclass
class RunContext:
    candidates: list[Candidate]
    targets: list[Target]
    data_dir: Path | None
    reports_dir: Path
    cache_dir: Path
    candidates_dir: Path
    limit: int | None = None
    use_cache: bool = True
    results: list[GateResult] = field(default_factory=list)
    _models: dict[str, tuple[Path, str]] = field(default_factory=dict)
    _summaries: dict[str, GGUFSummary] = field(default_factory=dict)
    _items: dict[str, tuple[list[QAItem], dict[str, Any]]] = field(default_factory=dict)
    _qa_responses: dict[str, list[Response]] = field(default_factory=dict)
    _active: Active | None = None
    _store: Any = None  # the generation store, opened on first use and closed with the run
    failed_first_tier: set[str] = field(default_factory=set)

    def pairs(self, gate: str) -> list[Pair]:
        return [
            Pair(c, t)
            for c in self.candidates
            for t in self.targets
            if runs_on(c, t.role) and getattr(t.gates, gate, None) is not None
            and (gate != "conformance" or c.base is not None)
        ]

    # -- resources, loaded lazily and once ---------------------------------------------------
    def model(self, candidate: Candidate) -> tuple[Path, str]:
        if candidate.name not in self._models:
            self._models[candidate.name] = materialize(candidate, self.cache_dir)
        return self._models[candidate.name]

    def gguf(self, candidate: Candidate) -> GGUFSummary:
        from edgeready.gguf_info import read_gguf

        if candidate.name not in self._summaries:
            self._summaries[candidate.name] = read_gguf(self.model(candidate)[0])
        return self._summaries[candidate.name]

    def part(self, owner: Candidate, ref: str) -> Candidate:
        """A candidate named by an offload candidate: a name in candidates/, or a manifest path
        relative to the offload manifest."""
        if ref.endswith((".yaml", ".yml")) and owner.source is not None and not Path(ref).is_absolute():
            ref = str(owner.source.parent / ref)
        return resolve_candidate(ref, self.candidates_dir)

    def device_candidate(self, pair: Pair) -> Candidate:
        """The model that runs on the device: the candidate, or an offload candidate's device part."""
        if pair.candidate.offload is not None:
            return self.part(pair.candidate, pair.candidate.offload.device)
        return pair.candidate

    def adapter(self, pair: Pair) -> Any:
        """The adapter for this pair. One is active at a time (tests are ordered by candidate), so a
        model or server is loaded once per pair and memory stays bounded."""
        prof = pair.target.profile
        key = (pair.candidate.name, pair.role, prof.threads, prof.n_ctx, prof.n_batch)
        if self._active is None or self._active.key != key:
            self.close_active()
            self._active = self._open(pair, key)
        return self._active.adapter

    def cached(self, pair: Pair) -> Any:
        """The pair's adapter behind the generation cache, for gates whose result depends only on the
        texts (accuracy, hallucination); latency and energy always generate. Device role only: a
        server's or router's outputs depend on more than the request."""
        if not self.use_cache or pair.role != "device":
            return self.adapter(pair)
        from adapters.cached import CachedAdapter, runtime_key
        from adapters.deferred import DeferredAdapter

        prof, cand = pair.target.profile, pair.candidate
        runtime = runtime_key(n_ctx=prof.n_ctx, n_batch=prof.n_batch, prompt_style=cand.prompt_style)
        # The model is loaded on the first miss only: a fully cached re-run never loads it.
        device = DeferredAdapter(lambda: self.adapter(pair), name=cand.name, description={
            "adapter": "llama-cpp-device", "runtime": runtime["runtime"], "llama_cpp_python": runtime["version"],
            "system_info": runtime["system_info"], "model_path": str(self.model(cand)[0]),
            "threads": prof.threads, "n_ctx": prof.n_ctx, "prompt_style": cand.prompt_style})
        return CachedAdapter(device, self.store(), model_sha256=self.model(cand)[1], runtime=runtime)

    def store(self) -> Any:
        """The generation store under --cache-dir, opened on first use (None with --no-cache)."""
        if not self.use_cache:
            return None
        if self._store is None:
            from edgeready.cache import GenerationStore, store_path

            self._store = GenerationStore(store_path(self.cache_dir))
        return self._store

    def server_pid(self) -> int | None:
        return self._active.server.pid if self._active and self._active.server else None

    def _device_adapter(self, cand: Candidate, pair: Pair) -> Any:
        from adapters.llama_cpp_device import LlamaCppDevice  # imported late: config errors stay fast

        prof = pair.target.profile
        return LlamaCppDevice(self.model(cand)[0], threads=prof.threads, n_ctx=prof.n_ctx, n_batch=prof.n_batch,
                              name=cand.name, prompt_style=cand.prompt_style)

    def _server_adapter(self, cand: Candidate, pair: Pair) -> tuple[Any, Any]:
        from adapters.openai_server import OpenAIServerAdapter

        if cand.endpoint is not None:
            ep = cand.endpoint
            return OpenAIServerAdapter(ep.base_url, ep.model, api=ep.api, api_key_env=ep.api_key_env,
                                       concurrency=ep.concurrency, timeout_s=ep.timeout_s,
                                       max_retries=ep.max_retries, name=cand.name), None
        from edgeready.server_process import LlamaCppServer

        prof = pair.target.profile
        server = LlamaCppServer(self.model(cand)[0], n_ctx=prof.n_ctx, threads=prof.threads, n_batch=prof.n_batch,
                                model_alias=cand.name).start()
        api = "completions" if cand.prompt_style == "few-shot" else "chat"
        return OpenAIServerAdapter(server.base_url, server.model_alias, api=api, name=cand.name), server

    def _open(self, pair: Pair, key: tuple[Any, ...]) -> Active:
        cand = pair.candidate
        if pair.role == "device":
            return Active(key, self._device_adapter(cand, pair))
        if pair.role == "server":
            adapter, server = self._server_adapter(cand, pair)
            return Active(key, adapter, server)
        from adapters.offload import Network, OffloadAdapter

        spec = cand.offload
        assert spec is not None and pair.target.profile.network is not None
        device = self._device_adapter(self.part(cand, spec.device), pair)
        server_adapter = server = None
        server_error = None
        if spec.policy != "never":
            try:
                server_adapter, server = self._server_adapter(self.part(cand, spec.server), pair)
            except Exception as exc:  # the offload adapter answers on the device and counts each fallback
                server_error = f"{type(exc).__name__}: {exc}"[:500]
        net = pair.target.profile.network
        adapter = OffloadAdapter(device, server_adapter, policy=spec.policy, cascade_threshold=spec.cascade_threshold,
                                 network=Network(net.rtt_ms, net.uplink_mbps, net.downlink_mbps, net.loss),
                                 name=cand.name, server_error=server_error)
        return Active(key, adapter, server)

    def close_active(self) -> None:
        if self._active is not None:
            try:
                self._active.adapter.close()
            finally:
                if self._active.server is not None:
                    self._active.server.stop()
                self._active = None

    def qa_items(self, pair: Pair) -> tuple[list[QAItem], dict[str, Any]]:
        from edgeready.gates.accuracy import load_dataset, select_items

        gate = pair.target.gates.accuracy
        assert gate is not None
        key = f"{pair.target.key}|{self.limit}"
        if key not in self._items:
            items, prov = load_dataset(gate.dataset, self.data_dir)
            chosen = select_items(gate, items, self.limit)
            self._items[key] = (chosen, {**prov, "population": len(items), "sampled": len(chosen)})
        return self._items[key]

    def gate_prompts(self, pair: Pair) -> list[QAItem]:
        """The accuracy gate's questions, or embedded ones for a target without an accuracy gate."""
        if pair.target.gates.accuracy is not None:
            return self.qa_items(pair)[0]
        from edgeready.datasets.countries import load_countries_qa
        from edgeready.datasets.sampling import stratified_sample

        return stratified_sample(load_countries_qa(), 32, 0)

    # -- measuring and judging ---------------------------------------------------------------
    def base(self, pair: Pair, gate: str) -> dict[str, str]:
        return {"candidate": pair.candidate.name, "target": pair.target.key, "role": pair.role, "gate": gate}

    def measure(self, pair: Pair, gate: str) -> Measurement:
        try:
            return self._measure(pair, gate)
        except Exception as exc:
            self.record(GateResult(**self.base(pair, gate), status="error", error=f"{type(exc).__name__}: {exc}"))  # type: ignore[arg-type]
            raise

    def _provenance(self, pair: Pair) -> dict[str, Any]:
        cand = self.device_candidate(pair) if pair.role == "offload" else pair.candidate
        if cand.format != "gguf":
            return {"endpoint": cand.endpoint.model_dump() if cand.endpoint else None}
        return {"sha256": self.model(cand)[1]}

    def _measure(self, pair: Pair, gate: str) -> Measurement:
        gates = pair.target.gates
        if gate == "accuracy":
            from edgeready.gates.accuracy import measure_accuracy

            assert gates.accuracy is not None
            items, prov = self.qa_items(pair)
            responses: list[Response] = []
            m = measure_accuracy(self.cached(pair), pair.candidate, gates.accuracy, items,
                                 {**prov, **self._provenance(pair)}, responses_out=responses)
            self._qa_responses[pair.id] = responses
            return m
        if gate == "hallucination":
            from edgeready.gates.hallucination import choose_concepts, load_concepts, measure_hallucination

            hcfg = gates.hallucination
            assert hcfg is not None
            concepts, prov = load_concepts(hcfg.concepts, self.data_dir)
            chosen = choose_concepts(concepts, self.limit or hcfg.cap, hcfg.seed)
            # Sentence scores depend only on the texts (they are in the key), so they are stored for every role.
            return measure_hallucination(self.cached(pair), hcfg, chosen,
                                         {**prov, "population": len(concepts), **self._provenance(pair)},
                                         pair.target.profile.threads, store=self.store())
        if gate == "memory":
            return self._measure_memory(pair)
        if gate == "energy":
            from edgeready.gates.energy import measure_energy

            assert gates.energy is not None
            adapter = self.adapter(pair)
            # A server's energy is its own process's (or its GPU's); a device's is this process's.
            pid = self.server_pid() if pair.role == "server" else os.getpid()
            if pid is None:
                raise MeasurementError("energy of an external endpoint cannot be metered from here")
            return measure_energy(adapter, gates.energy, pair.target.profile,
                                  self.gate_prompts(pair), self._provenance(pair), pid=pid)
        if gate == "conformance":
            from edgeready.gates.conformance import measure_conformance

            assert gates.conformance is not None and pair.candidate.base is not None
            base = self.part(pair.candidate, pair.candidate.base)
            base_path, _ = self.model(base)
            cand_path, sha = self.model(pair.candidate)
            self.close_active()  # KLD loads both models itself
            return measure_conformance(base_path, cand_path, pair.candidate.artifact.sha256 if pair.candidate.artifact
                                       else None, gates.conformance, pair.target.profile, self.cache_dir,
                                       {"sha256": sha, "base_candidate": base.name})
        if gate == "latency":
            from edgeready.gates.latency import measure_latency

            assert gates.latency is not None
            adapter = self.adapter(pair)
            responses = self._qa_responses.get(pair.id)
            if responses is None:  # the accuracy gate was deselected: answer its questions here
                from edgeready.prompts import qa_request

                assert gates.accuracy is not None, "a latency gate needs the target's accuracy questions"
                items = self.qa_items(pair)[0]
                responses = adapter.generate([qa_request(it, gates.accuracy.max_tokens) for it in items])
            return measure_latency(adapter, responses, gates.latency, self._provenance(pair))
        raise ValueError(f"unknown gate {gate!r}")

    def _measure_memory(self, pair: Pair) -> Measurement:
        from edgeready.gates.memory import measure_memory, measure_server_memory
        from edgeready.prompts import qa_request

        cfg = pair.target.gates.memory
        assert cfg is not None
        # The probe answers the gate's first prompts, so peak memory includes real generation.
        requests = [qa_request(it, 16) for it in self.gate_prompts(pair)[: cfg.probe_prompts]]
        if pair.role == "server":
            if pair.candidate.format != "gguf":
                raise MeasurementError(
                    "memory of an external endpoint cannot be measured from here: measure it on the server "
                    "host, or remove gates.memory from this target")
            adapter = self.adapter(pair)
            adapter.generate(requests)
            path, sha = self.model(pair.candidate)
            pid = self.server_pid()
            assert pid is not None
            return measure_server_memory(pid, path, sha, self.gguf(pair.candidate), pair.target.profile,
                                         len(requests))
        cand = self.device_candidate(pair)  # offload: the device's memory is what the target limits
        self.close_active()  # the probe process must not compete with a resident model
        if pair.candidate.offload is not None and pair.candidate.offload.policy == "always":
            return measure_memory(None, "", None, pair.target.profile, [], cand.prompt_style)
        path, sha = self.model(cand)
        return measure_memory(path, sha, self.gguf(cand), pair.target.profile, requests, cand.prompt_style)

    def judge(self, pair: Pair, m: Measurement) -> GateResult:
        from edgeready.gates import judge_measurement

        result = judge_measurement(self.base(pair, m.gate), m, pair.target, self.device_candidate(pair))
        self.record(result)
        if m.gate == "conformance" and result.status != "pass":
            self.failed_first_tier.add(pair.id)
        return result

    def record(self, result: GateResult) -> None:
        if result.measurement is not None and result.measurement.items:
            items_dir = self.reports_dir / "items"
            items_dir.mkdir(parents=True, exist_ok=True)
            target = result.target.replace("/", "-")
            path = items_dir / f"{result.candidate}__{target}__{result.gate}.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for rec in result.measurement.items:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            result.items_file = str(path)
        self.results.append(result)

    def close(self) -> None:
        self.close_active()
        if self._store is not None:
            self._store.close()
            self._store = None
