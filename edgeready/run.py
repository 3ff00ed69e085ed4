"""One gate run: the (candidate x target) pairs, and for each pair and gate gather -> measure -> judge.

`Run` is what the gates see of the run (edgeready.gates.base.RunResources): it hands them models and adapters
from its `AdapterPool` and shares inputs between gates; every result goes to its `Recorder`. Everything
pytest-specific lives in plugin.py, so this module can drive gates from plain Python:

    run = Run.create(candidates, targets, reports_dir=Path("reports"), cache_dir=Path(".cache"),
                     candidates_dir=Path("candidates"))
    for pair in run.pairs("accuracy"):
        result = run.judge(pair, run.measure(pair, "accuracy"))
    run.close()
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgeready.baseline import BaselineRun
from edgeready.candidates import Candidate, ResolvedModel
from edgeready.errors import ConfigError, EdgereadyError, MeasurementError
from edgeready.gates import StashKey, gate_named
from edgeready.measurement import GateResult, Measurement, judge
from edgeready.pool import AdapterPool
from edgeready.recorder import Recorder
from edgeready.schema import Pair, Target, runs_on
from edgeready.secrets import Redactor

if TYPE_CHECKING:
    from edgeready.adapters.base import Adapter
    from edgeready.cache import GenerationStore
    from edgeready.gguf_info import GGUFSummary
    from edgeready.phone import PhoneServer

T = TypeVar("T")


@dataclass
class Run:
    candidates: list[Candidate]
    targets: list[Target]
    pool: AdapterPool
    recorder: Recorder
    data_dir: Path | None = None
    limit: int | None = None
    # What each target's candidates are compared with (by target key), for targets with a `baseline:` block.
    baselines: dict[str, Candidate | BaselineRun] = field(default_factory=dict)
    # Pairs whose first-tier gate did not pass: their other gates are skipped.
    failed_first_tier: set[str] = field(default_factory=set)
    _shared: dict[StashKey[Any], Any] = field(default_factory=dict)

    @classmethod
    def create(cls, candidates: list[Candidate], targets: list[Target], *, reports_dir: Path, cache_dir: Path,
               candidates_dir: Path, data_dir: Path | None = None, limit: int | None = None,
               use_cache: bool = True, baselines: dict[str, Candidate | BaselineRun] | None = None,
               worker: int = 0) -> Run:
        pool = AdapterPool(cache_dir, candidates_dir, use_cache, worker)
        keys = [c.endpoint.api_key_env for c in _with_parts(candidates, pool) if c.endpoint and c.endpoint.api_key_env]
        return cls(candidates, targets, pool, Recorder(reports_dir, Redactor.from_env(keys)), data_dir, limit,
                   dict(baselines or {}))

    def pairs(self, gate: str) -> list[Pair]:
        """The pairs this gate runs on: roles that fit, a target that configures the gate, and the gate's own
        condition (e.g. conformance only for derived candidates). Grouped by candidate."""
        g = gate_named(gate)
        pairs = [Pair(c, t, self.baselines.get(t.key)) for c in self.candidates for t in self.targets
                 if runs_on(c, t.role) and t.role in g.roles and t.gates.get(gate) is not None]
        return sorted((p for p in pairs if g.applies(p)), key=lambda p: (p.candidate.name, p.target.name))

    def measure(self, pair: Pair, gate: str) -> Measurement:
        """gather -> measure. A measurement that cannot be made is recorded as an error and re-raised."""
        g, cfg = gate_named(gate), pair.target.gates.get(gate)
        try:
            return g.measure(g.gather(self, pair, cfg), cfg)
        except Exception as exc:
            self.recorder.record(GateResult(**labels(pair, gate), status="error", error=error_text(exc)))
            raise

    def judge(self, pair: Pair, m: Measurement) -> GateResult:
        """The measurement against the pair's target; the result is recorded."""
        g, cfg = gate_named(m.gate), pair.target.gates.get(m.gate)
        if cfg is None:
            raise ConfigError(f"target {pair.target.key} has no {m.gate} gate to judge against")
        try:
            _same_margin(pair, m)
            judgement = g.judge(m, cfg, self.device_candidate(pair))
        except EdgereadyError as exc:
            self.recorder.record(GateResult(**labels(pair, m.gate), status="error", measurement=m,
                                            error=error_text(exc)))
            raise
        result = self.recorder.record(judge(labels(pair, m.gate), m, judgement))
        if g.first_tier and result.status != "pass":
            self.failed_first_tier.add(pair.id)
        return result

    @property
    def results(self) -> list[GateResult]:
        return self.recorder.results

    def close(self) -> None:
        self.pool.close()

    # -- what the gates may ask (edgeready.gates.base.RunResources) ------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.pool.cache_dir

    def shared(self, key: StashKey[T], factory: Callable[[], T]) -> T:
        if key not in self._shared:
            self._shared[key] = factory()
        return self._shared[key]  # type: ignore[no-any-return]

    def model(self, candidate: Candidate) -> ResolvedModel:
        return self.pool.model(candidate)

    def gguf(self, candidate: Candidate) -> GGUFSummary:
        return self.pool.gguf(candidate)

    def part(self, owner: Candidate, ref: str) -> Candidate:
        return self.pool.part(owner, ref)

    def device_candidate(self, pair: Pair) -> Candidate:
        return self.pool.device_candidate(pair)

    def live(self, pair: Pair) -> Adapter:
        return self.pool.live(pair)

    def cached(self, pair: Pair) -> Adapter:
        return self.pool.cached(pair)

    def release(self) -> None:
        self.pool.release()

    def server_pid(self) -> int | None:
        return self.pool.server_pid()

    def store(self) -> GenerationStore | None:
        return self.pool.store()

    def provenance(self, pair: Pair) -> dict[str, Any]:
        return self.pool.provenance(pair)

    def device_serial(self, pair: Pair) -> str | None:
        return self.pool.device_serial(pair)

    def phone(self) -> PhoneServer | None:
        return self.pool.phone()


def _same_margin(pair: Pair, m: Measurement) -> None:
    """A paired measurement is judged only by the margin it was measured for (its plan: the paired test is
    built from it), as a sequential one only by its own threshold."""
    want = pair.target.baseline.margins.get(m.gate) if pair.target.baseline else None
    got = m.paired.margin if m.paired else None
    if want != got:
        raise MeasurementError(f"{m.gate}: measured against a baseline with margin {got}, but target "
                               f"{pair.target.key} asks for {want}")


def _with_parts(candidates: list[Candidate], pool: AdapterPool) -> list[Candidate]:
    """The candidates and the device and server candidates their offload deployments name."""
    parts = [pool.part(c, ref) for c in candidates if c.offload for ref in (c.offload.device, c.offload.server)]
    return candidates + parts


def labels(pair: Pair, gate: str) -> dict[str, str]:
    """How a result names what it judged."""
    return {"candidate": pair.candidate.name, "target": pair.target.key, "role": pair.role, "gate": gate}


def error_text(exc: BaseException) -> str:
    """An error as the verdict shows it: its class (an EdgereadyError subclass names what went wrong: config,
    dataset, measurement, scorer, server) and its message."""
    return f"{type(exc).__name__}: {exc}"


def run_digests(run: Run) -> dict[str, dict[str, str]]:
    """sha256 of each target file and of each candidate's manifest (with its model's recorded digest), so
    that the reports of runs on different inputs can be told apart (edgeready merge refuses to mix them)."""
    def digest(path: Path | None) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else "-"

    candidates = {}
    for c in run.candidates:
        art = c.artifact
        candidates[c.name] = f"{digest(c.source)}|{art.sha256 or art.path if art else '-'}"
    return {"targets": {t.key: digest(t.source) for t in run.targets}, "candidates": candidates}
