"""One gate run: the (candidate x target) pairs, the models they load, and the results they produce.

Everything pytest-specific lives in plugin.py; this module can drive gates from plain Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeready.candidates import Candidate, materialize
from edgeready.gguf_info import GGUFSummary, read_gguf
from edgeready.measurement import GateResult, Measurement
from edgeready.records import QAItem
from edgeready.targets import Role, Target

GATES = ("accuracy", "hallucination", "memory", "energy")


@dataclass(frozen=True)
class Pair:
    candidate: Candidate
    target: Target

    @property
    def id(self) -> str:
        return f"{self.candidate.name}@{self.target.name}"

    @property
    def role(self) -> Role:
        return self.target.role


def runs_on(candidate: Candidate, role: Role) -> bool:
    """A GGUF candidate runs in-process on a device target."""
    return candidate.format == "gguf" and role == "device"


@dataclass
class RunContext:
    candidates: list[Candidate]
    targets: list[Target]
    data_dir: Path | None
    reports_dir: Path
    cache_dir: Path
    limit: int | None = None
    results: list[GateResult] = field(default_factory=list)
    _models: dict[str, tuple[Path, str]] = field(default_factory=dict)
    _summaries: dict[str, GGUFSummary] = field(default_factory=dict)
    _items: dict[str, tuple[list[QAItem], dict[str, Any]]] = field(default_factory=dict)
    _device: tuple[tuple[str, int, int], Any] | None = None

    def pairs(self, gate: str) -> list[Pair]:
        return [
            Pair(c, t)
            for c in self.candidates
            for t in self.targets
            if runs_on(c, t.role) and getattr(t.gates, gate, None) is not None
        ]

    # -- resources, loaded lazily and once ---------------------------------------------------
    def model(self, candidate: Candidate) -> tuple[Path, str]:
        if candidate.name not in self._models:
            self._models[candidate.name] = materialize(candidate, self.cache_dir)
        return self._models[candidate.name]

    def gguf(self, candidate: Candidate) -> GGUFSummary:
        if candidate.name not in self._summaries:
            self._summaries[candidate.name] = read_gguf(self.model(candidate)[0])
        return self._summaries[candidate.name]

    def device(self, pair: Pair) -> Any:
        """The in-process device adapter for this pair. One model is resident at a time: tests are
        ordered by candidate, so switching is rare and memory stays bounded."""
        from adapters.llama_cpp_device import LlamaCppDevice  # imported late: config errors stay fast

        prof = pair.target.profile
        key = (pair.candidate.name, prof.threads, prof.n_ctx)
        if self._device is None or self._device[0] != key:
            self.close_device()
            path, _ = self.model(pair.candidate)
            self._device = (key, LlamaCppDevice(path, threads=prof.threads, n_ctx=prof.n_ctx,
                                                n_batch=prof.n_batch, name=pair.candidate.name))
        return self._device[1]

    def close_device(self) -> None:
        if self._device is not None:
            self._device[1].close()
            self._device = None

    def qa_items(self, pair: Pair) -> tuple[list[QAItem], dict[str, Any]]:
        from edgeready.gates.accuracy import load_dataset, select_items

        gate = pair.target.gates.accuracy
        assert gate is not None
        key = f"{pair.target.name}|{self.limit}"
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
        return {"candidate": pair.candidate.name, "target": pair.target.name, "role": pair.role, "gate": gate}

    def measure(self, pair: Pair, gate: str) -> Measurement:
        try:
            return self._measure(pair, gate)
        except Exception as exc:
            self.record(GateResult(**self.base(pair, gate), status="error", error=f"{type(exc).__name__}: {exc}"))  # type: ignore[arg-type]
            raise

    def _measure(self, pair: Pair, gate: str) -> Measurement:
        if gate == "accuracy":
            from edgeready.gates.accuracy import measure_accuracy

            cfg = pair.target.gates.accuracy
            assert cfg is not None
            items, prov = self.qa_items(pair)
            _, sha = self.model(pair.candidate)
            return measure_accuracy(self.device(pair), pair.candidate, cfg, items, {**prov, "sha256": sha})
        if gate == "memory":
            from edgeready.gates.memory import measure_memory
            from edgeready.prompts import qa_request

            cfg = pair.target.gates.memory
            assert cfg is not None
            path, sha = self.model(pair.candidate)
            # The probe answers the accuracy gate's first prompts, so peak memory includes real
            # generation.
            items = self.gate_prompts(pair)
            self.close_device()  # the probe process must not compete with a resident model
            requests = [qa_request(it, pair.candidate.prompt_style, 16) for it in items[: cfg.probe_prompts]]
            return measure_memory(path, sha, self.gguf(pair.candidate), pair.target.profile, requests)
        if gate == "hallucination":
            from edgeready.gates.hallucination import choose_concepts, load_concepts, measure_hallucination

            hcfg = pair.target.gates.hallucination
            assert hcfg is not None
            concepts, prov = load_concepts(hcfg.concepts, self.data_dir)
            chosen = choose_concepts(concepts, self.limit or hcfg.sample_size, hcfg.seed)
            _, sha = self.model(pair.candidate)
            return measure_hallucination(self.device(pair), pair.candidate, hcfg, chosen,
                                         {**prov, "population": len(concepts), "sha256": sha},
                                         pair.target.profile.threads)
        if gate == "energy":
            from edgeready.gates.energy import measure_energy

            ecfg = pair.target.gates.energy
            assert ecfg is not None
            _, sha = self.model(pair.candidate)
            return measure_energy(self.device(pair), pair.candidate, ecfg, pair.target.profile,
                                  self.gate_prompts(pair), {"sha256": sha})
        raise ValueError(f"unknown gate {gate!r}")

    def judge(self, pair: Pair, m: Measurement) -> GateResult:
        if m.gate == "accuracy":
            from edgeready.gates.accuracy import judge_accuracy

            cfg = pair.target.gates.accuracy
            assert cfg is not None
            result = judge_accuracy(self.base(pair, "accuracy"), m, cfg, pair.candidate)
        elif m.gate == "memory":
            from edgeready.gates.memory import judge_memory

            mcfg = pair.target.gates.memory
            assert mcfg is not None
            result = judge_memory(self.base(pair, "memory"), m, mcfg, pair.candidate)
        elif m.gate == "hallucination":
            from edgeready.gates.hallucination import judge_hallucination

            hcfg = pair.target.gates.hallucination
            assert hcfg is not None
            result = judge_hallucination(self.base(pair, "hallucination"), m, hcfg, pair.candidate)
        elif m.gate == "energy":
            from edgeready.gates.energy import judge_energy

            ecfg = pair.target.gates.energy
            assert ecfg is not None
            result = judge_energy(self.base(pair, "energy"), m, ecfg)
        else:
            raise ValueError(f"unknown gate {m.gate!r}")
        self.record(result)
        return result

    def record(self, result: GateResult) -> None:
        if result.measurement is not None and result.measurement.items:
            items_dir = self.reports_dir / "items"
            items_dir.mkdir(parents=True, exist_ok=True)
            path = items_dir / f"{result.candidate}__{result.target}__{result.gate}.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for rec in result.measurement.items:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            result.items_file = str(path)
        self.results.append(result)

    def close(self) -> None:
        self.close_device()
