"""Gate logic, independent of pytest: measure (adapter -> responses -> scores -> measurement) and
judge (measurement -> checks against the target -> GateResult with step-1 advice)."""

from __future__ import annotations

from edgeready.candidates import Candidate
from edgeready.measurement import GateResult, Measurement
from edgeready.targets import Target


def judge_measurement(base: dict[str, str], m: Measurement, target: Target, candidate: Candidate) -> GateResult:
    """Dispatch to the gate's judge. `candidate` is the model the advice is about (for an offload
    deployment, its device model)."""
    g = target.gates
    if m.gate == "accuracy" and g.accuracy is not None:
        from edgeready.gates.accuracy import judge_accuracy

        return judge_accuracy(base, m, g.accuracy, candidate)
    if m.gate == "hallucination" and g.hallucination is not None:
        from edgeready.gates.hallucination import judge_hallucination

        return judge_hallucination(base, m, g.hallucination, candidate)
    if m.gate == "memory" and g.memory is not None:
        from edgeready.gates.memory import judge_memory

        return judge_memory(base, m, g.memory, candidate)
    if m.gate == "energy" and g.energy is not None:
        from edgeready.gates.energy import judge_energy

        return judge_energy(base, m, g.energy)
    if m.gate == "conformance" and g.conformance is not None:
        from edgeready.gates.conformance import judge_conformance

        return judge_conformance(base, m, g.conformance)
    if m.gate == "latency" and g.latency is not None:
        from edgeready.gates.latency import judge_latency

        return judge_latency(base, m, g.latency)
    raise ValueError(f"target {target.name} has no {m.gate} gate to judge against")
