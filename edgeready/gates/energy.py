"""Resource consumption: energy per query, from a real counter where there is one.

The queries are the accuracy gate's prompts answered by the loaded device adapter, in batches inside
one meter window (edgeready.energy.method): an idle baseline is subtracted, batches repeat until the
window is long enough for the counter's resolution, and each batch's net energy per query gives a
Student-t interval across batches. The gate compares the interval's upper bound with the maximum.
A target that requires a measured value on a machine with no counter is an error, never a pass.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from edgeready.adapters.base import Adapter
from edgeready.advice import energy_advice
from edgeready.baseline import BaselineRun
from edgeready.candidates import Candidate
from edgeready.gates.accuracy import prompts_for
from edgeready.gates.base import Gate, RunResources, register
from edgeready.gates.paired import same_model
from edgeready.measurement import Check, Judgement, Measurement, MeasurementError, PairedOutcome
from edgeready.prompts import qa_request
from edgeready.records import QAItem
from edgeready.schema import GateConfig, Pair, Profile, Target
from edgeready.stats import student_t

if TYPE_CHECKING:  # the meters are imported when energy is measured, not when a target is validated
    from edgeready.energy import Meter
    from edgeready.phone import PhoneServer


class EnergyConfig(GateConfig):
    """`gates.energy`: energy per query. `require: measured` turns an estimate into an error (for sign-off)."""

    max_mwh_per_query: float = Field(gt=0)
    require: Literal["measured", "any"] = "measured"
    meter: Literal["auto", "rapl", "nvml", "android", "estimate"] = "auto"
    queries_per_batch: int = Field(default=8, ge=1)
    min_window_s: float = Field(default=2.0, gt=0)
    min_rel_resolution: float = Field(default=0.01, gt=0, lt=1)
    baseline_s: float = Field(default=1.0, ge=0)
    max_window_s: float = Field(default=120.0, gt=0)
    min_batches: int = Field(default=3, ge=1, description="batches give the interval's spread")
    max_batches: int = Field(default=8, ge=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)

    # Judged as a ratio to the baseline's, from interleaved batches (target `baseline.margins.energy`).
    supports_baseline: ClassVar[bool] = True

    def check_target(self, target: Target) -> None:
        if target.profile.phone is not None and self.meter not in ("auto", "android"):
            raise ValueError(f"gates.energy.meter: {self.meter} cannot meter a model running on the phone "
                             "(profile.phone): use android (its fuel gauge over adb) or auto")
        if target.profile.phone is not None and self.require == "measured" and not target.profile.phone.on_battery:
            raise ValueError("gates.energy.require: measured reads the phone's fuel gauge, which needs the phone on "
                             "battery: set profile.phone.on_battery: true so the run checks that before it starts")
        if self.require == "any" and self.meter in ("auto", "estimate") and target.profile.power is None:
            raise ValueError("gates.energy may fall back to an estimate but profile.power is missing")


# Interleaved batch pairs for a ratio to the baseline: a Student-t interval from fewer is too wide to decide.
PAIRS = 6


@dataclass
class EnergyInputs:
    adapter: Adapter
    profile: Profile
    items: list[QAItem]
    provenance: dict[str, Any]
    pid: int
    serial: str | None = None  # the phone this worker owns, for the Android fuel gauge
    adb: str | None = None  # the model runs on that phone (profile.phone): its gauge, through this adb binary
    # The baseline (target `baseline.margins.energy`): its adapter, answering batches interleaved with the
    # candidate's; or its recorded energy per query; or "same" for the candidate itself.
    baseline: Adapter | float | str | None = None
    baseline_name: str = ""
    margin: float | None = None


@register
class Energy(Gate[EnergyConfig, EnergyInputs]):
    name = "energy"
    order = 4
    config = EnergyConfig
    description = "resource consumption (energy per query)"

    def gather(self, run: RunResources, pair: Pair, cfg: EnergyConfig) -> EnergyInputs:
        adapter = run.live(pair)
        phone = run.phone() if pair.target.profile.phone is not None else None
        if phone is not None:
            return _on_phone(run, pair, cfg, adapter, phone)
        # A server's energy is its own process's (or its GPU's); a device's is this process's.
        pid = run.server_pid() if pair.role == "server" else os.getpid()
        if pid is None:
            raise MeasurementError("energy of an external endpoint cannot be metered from here")
        inputs = EnergyInputs(adapter, pair.target.profile, prompts_for(run, pair, cfg.queries_per_batch),
                              run.provenance(pair), pid, run.device_serial(pair))
        spec, base = pair.target.baseline, pair.baseline
        margin = spec.margins.get("energy") if spec is not None else None
        if margin is not None and base is not None:
            inputs.margin, inputs.baseline_name = margin, base.name
            if isinstance(base, BaselineRun):
                inputs.baseline = float(base.gate("energy")["value"])
            elif base.format == "gguf" and same_model(run, pair.candidate, base, prompts=False):
                inputs.baseline = "same"
            else:
                inputs.baseline = run.live(Pair(base, pair.target))
                run.live(pair)  # the candidate's server, if any, stays the one metered
        return inputs

    def measure(self, inputs: EnergyInputs, cfg: EnergyConfig) -> Measurement:
        m = measure_energy(inputs.adapter, cfg, inputs.profile, inputs.items, inputs.provenance, inputs.pid,
                           inputs.serial, inputs.adb)
        if inputs.margin is not None:
            m.paired = _versus_baseline(inputs, cfg, m)
        return m

    def judge(self, m: Measurement, cfg: EnergyConfig, subject: Candidate) -> Judgement:
        observed = m.interval.high if m.interval else m.value
        compared = f"upper bound ({m.interval.confidence:.0%} {m.interval.method})" if m.interval else "value"
        check = Check("energy_per_query", observed, "<=", cfg.max_mwh_per_query, "mWh", f"{compared}, {m.method}")
        checks = [check]
        pc = m.paired
        if pc is not None:
            checks.append(Check("energy_vs_baseline", 1 + pc.loss_upper, "<=", 1 + pc.margin, "x",
                                f"energy per query / {pc.baseline}'s, upper bound"))
        failed = next((c for c in checks if not c.passed), check)
        return Judgement(checks, energy_advice(failed))


def _on_phone(run: RunResources, pair: Pair, cfg: EnergyConfig, adapter: Adapter, phone: PhoneServer
              ) -> EnergyInputs:
    """The phone's own fuel gauge while its server answers (no estimate: the host's CPU time says nothing of a
    phone's)."""
    if pair.target.baseline is not None and "energy" in pair.target.baseline.margins:
        raise MeasurementError("energy against a baseline is not measured on a phone yet (one server at a time "
                               "runs there): remove baseline.margins.energy from this target")
    return EnergyInputs(adapter, pair.target.profile, prompts_for(run, pair, cfg.queries_per_batch),
                        run.provenance(pair), phone.pid or 0, phone.serial, phone.spec.adb)


def _versus_baseline(inputs: EnergyInputs, cfg: EnergyConfig, m: Measurement) -> PairedOutcome:
    """The candidate's energy per query as a ratio to the baseline's: from batches of the two interleaved in one
    meter window (A B A B ..., so the host's drift cancels), with a Student-t interval of the log ratio; or
    against the baseline run's recorded value (one ratio, no interval: the hosts and times differ)."""
    base, margin = inputs.baseline, inputs.margin or 0.0
    if base == "same":
        lo = hi = ratio = 1.0
        source, reason = "same model", "the baseline is the candidate itself (same sha256): ratio exactly 1"
    elif isinstance(base, float):
        lo = hi = ratio = m.value / base
        source, reason = "reports", f"{m.value:.4g} mWh vs the recorded {base:.4g} mWh (not interleaved)"
    else:
        assert base is not None and not isinstance(base, str)
        ratios = _interleaved_ratios(inputs.adapter, base, inputs, cfg, m)
        logs = [math.log(r) for r in ratios]
        iv = student_t(logs, cfg.confidence, floor=None)
        ratio = math.exp(sum(logs) / len(logs))
        assert iv is not None  # at least PAIRS pairs
        lo, hi = math.exp(iv.low), math.exp(iv.high)
        shown = ", ".join(f"{r:.3f}" for r in ratios)
        source, reason = "model", f"{len(ratios)} interleaved batch pairs: ratios {shown}"
    return PairedOutcome(
        baseline=inputs.baseline_name, source=source, margin=margin,  # type: ignore[arg-type]
        alpha=round(1 - cfg.confidence, 12), n=1,
        loss=ratio - 1, loss_lower=lo - 1, loss_upper=hi - 1, decision="pass" if hi - 1 <= margin else "fail",
        stopped_by="measured", log_evalue_pass=0.0, log_boundary_pass=0.0, reason=reason,
        table={"ratio": ratio, "ratio_interval": [lo, hi], "meter": m.meter, "method": m.method})


def _interleaved_ratios(cand: Adapter, base: Adapter, inputs: EnergyInputs, cfg: EnergyConfig,
                        m: Measurement) -> list[float]:
    """min_batches pairs (at least PAIRS) of the same queries, candidate then baseline, net of the idle power the
    candidate's measurement found; each pair gives one ratio of energy per query."""
    requests = [qa_request(it, 16) for it in inputs.items[: cfg.queries_per_batch]]
    idle_w = float(m.details.get("baseline_w") or 0.0)
    meter = meter_for(cfg, inputs.profile, inputs.pid, inputs.serial)
    ratios = []
    meter.start()
    try:
        last = meter.read()
        for _ in range(max(PAIRS, cfg.min_batches)):
            used = []
            for model in (cand, base):
                model.generate(requests)
                now = meter.read()
                used.append(max(1e-12, (now.joules - last.joules) - idle_w * (now.seconds - last.seconds)))
                last = now
            ratios.append(used[0] / used[1])
    finally:
        meter.stop()
    return ratios


def measure_energy(
    adapter: Adapter, gate: EnergyConfig, profile: Profile, items: list[QAItem],
    provenance: dict[str, Any], pid: int, serial: str | None = None, adb: str | None = None,
) -> Measurement:
    from edgeready.energy import EnergyPerQuery, measure_queries

    meter = meter_for(gate, profile, pid, serial, adb=adb)
    requests = [qa_request(it, 16) for it in items[: gate.queries_per_batch]]
    marks: list[tuple[float, float, int]] = []  # cumulative (gross joules, seconds) after each batch
    tokens = 0

    def run_batch(_: int) -> int:
        nonlocal tokens
        responses = adapter.generate(requests)
        tokens += sum(r.completion_tokens for r in responses)
        reading = meter.read()
        marks.append((reading.joules, reading.seconds, len(requests)))
        return len(requests)

    window = measure_queries(
        meter, run_batch, gate.min_window_s, gate.min_rel_resolution,
        baseline_s=gate.baseline_s, max_window_s=gate.max_window_s, max_batches=gate.max_batches,
        min_batches=gate.min_batches,
    )
    per_query: EnergyPerQuery = window.per_query(
        tokens=tokens,
        battery_mah=profile.battery.capacity_mah if profile.battery else None,
        nominal_v=profile.battery.voltage_v if profile.battery else None,
    )
    batch_mwh = _per_batch_mwh(marks, window.reading.baseline_w)
    interval = student_t(batch_mwh, gate.confidence)
    return Measurement(
        gate="energy",
        metric="energy per query",
        value=per_query.mwh_per_query,
        unit="mWh",
        n=window.queries,
        interval=interval,
        method=per_query.method,
        meter=per_query.meter,
        provenance={**provenance, "adapter": adapter.describe(), "reading": window.reading.to_dict(), "pid": pid},
        details={
            "joules_per_query": per_query.joules_per_query,
            "mwh_per_query": per_query.mwh_per_query,
            "tokens_per_joule": per_query.tokens_per_joule,
            "battery_pct_per_100_queries": per_query.battery_pct_per_100_queries,
            "battery_wh": per_query.battery_wh,
            "completion_tokens": tokens,
            "batches": window.batches,
            "resolution_reached": window.resolution_reached,
            "resolution_j": per_query.resolution_j,
            "baseline_w": per_query.baseline_w,
            "window_s": per_query.seconds,
            "interval_note": "Student-t over per-batch energy per query" if interval else "one batch: no interval",
            "host_note": ("estimated from this host's CPU time and the target's power model: a phone's "
                          "cores are slower per watt, so treat it as a relative figure between candidates"
                          if per_query.method == "estimated" else "measured by a hardware counter"),
        },
        items=[{"id": f"batch-{i}", "mwh_per_query": v} for i, v in enumerate(batch_mwh)],
    )


def meter_for(gate: EnergyConfig, profile: Profile, pid: int, serial: str | None = None,
              adb_run: Callable[[list[str]], str] | None = None, *, adb: str | None = None) -> Meter:
    """The block's meter; the estimate, where allowed, uses the profile's power model on `pid`'s CPU time; the
    Android fuel gauge reads the phone `serial` (this worker's of the target's pool). `adb`: the model runs on
    that phone, so its gauge it is (through that adb binary), never another meter."""
    from edgeready.energy import CpuPowerModel, select_meter

    if adb is not None:
        return select_meter("android", require="measured", android_serial=serial, adb_run=adb_run, android_adb=adb)

    model = None
    if profile.power is not None:
        model = CpuPowerModel(profile.power.active_w_per_core, profile.power.idle_w,
                              source=f"target profile power model ({profile.device})")
    return select_meter(gate.meter, require=gate.require, estimate_model=model, estimate_pid=pid,
                        android_serial=serial, adb_run=adb_run)


def _per_batch_mwh(marks: list[tuple[float, float, int]], baseline_w: float) -> list[float]:
    from edgeready.energy.derived import joules_to_mwh

    out, prev_j, prev_s = [], 0.0, 0.0
    for joules, seconds, queries in marks:
        net = (joules - prev_j) - baseline_w * (seconds - prev_s)
        out.append(joules_to_mwh(net / queries))
        prev_j, prev_s = joules, seconds
    return out


