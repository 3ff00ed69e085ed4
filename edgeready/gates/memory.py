"""Accessibility: the memory a model needs on the target.

Two numbers, both compared with the target: the weights footprint read from the GGUF tensor table
(exact, no load), and the peak resident memory of a fresh process that loads the model with the
target's context and threads and answers the gate's prompts (measured by the kernel).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from edgeready.advice import memory_advice
from edgeready.baseline import BaselineRun
from edgeready.candidates import Candidate
from edgeready.gates.accuracy import prompts_for
from edgeready.gates.base import Gate, RunResources, register
from edgeready.gates.paired import same_model
from edgeready.measurement import Check, Judgement, Measurement, MeasurementError, PairedOutcome
from edgeready.prompts import qa_request
from edgeready.records import GenerationRequest
from edgeready.schema import GateConfig, Pair, Profile, Target

if TYPE_CHECKING:  # the gguf package costs a quarter second to import; configuration errors must be fast
    from edgeready.gguf_info import GGUFSummary
    from edgeready.phone import PhoneServer

MB = 1024 * 1024


class MemoryConfig(GateConfig):
    """`gates.memory`: limits on the weights footprint and on the peak resident memory (MB)."""

    max_weights_mb: float = Field(gt=0)
    max_peak_rss_mb: float = Field(gt=0)
    probe_prompts: int = Field(default=8, ge=1, description="Gate prompts answered in the probe")

    # Judged as ratios to the baseline's (target `baseline.margins.memory`: 0.05 = at most 5 % more).
    supports_baseline: ClassVar[bool] = True

    def check_target(self, target: Target) -> None:
        budget = target.profile.app_memory_budget_mb
        if self.max_peak_rss_mb > budget:
            raise ValueError(f"gates.memory.max_peak_rss_mb ({self.max_peak_rss_mb}) exceeds "
                             f"profile.app_memory_budget_mb ({budget})")
        if self.max_weights_mb > self.max_peak_rss_mb:
            raise ValueError(f"gates.memory.max_weights_mb ({self.max_weights_mb}) exceeds max_peak_rss_mb "
                             f"({self.max_peak_rss_mb}): weights are resident once loaded")

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_probe(
    model: Path | None, profile: Profile, requests: list[GenerationRequest], prompt_style: str, timeout_s: float = 900
) -> dict[str, Any]:
    payload = [
        {**asdict(r), "stop": list(r.stop), "messages": [list(m) for m in r.messages]} for r in requests
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(payload, fh)
        prompts = fh.name
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "edgeready.memprobe", *(["--model", str(model)] if model else []),
           "--threads", str(profile.threads),
           "--n-ctx", str(profile.n_ctx), "--n-batch", str(profile.n_batch), "--prompt-style", prompt_style,
           "--parallel", str(profile.parallel), "--prompts", prompts]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=PROJECT_ROOT)
    finally:
        os.unlink(prompts)
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        raise MeasurementError(f"memory probe exited {proc.returncode}: {' | '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_memory(
    model: Path | None, sha256: str, summary: GGUFSummary | None, profile: Profile,
    requests: list[GenerationRequest], prompt_style: str,
) -> Measurement:
    """`model=None`: a device that holds no model (every query offloaded); the probe then measures
    the bare process, so the comparison shows what offloading saves."""
    probe = run_probe(model, profile, requests, prompt_style)
    peak_mb = probe["peak_rss_bytes"] / MB
    if summary is None:
        return Measurement(gate="memory", metric="peak resident memory", value=peak_mb, unit="MB", n=0,
                           interval=None, method="measured", meter=probe["meter"],
                           provenance={"model": None}, details={"weights_mb": 0.0, "kv_cache_mb_full_attention": 0.0,
                                                                 "note": "no model on the device"},
                           items=[{"id": "probe", **probe}])
    kv_mb = summary.kv_cache_bytes(profile.n_ctx) / MB
    return Measurement(
        gate="memory",
        metric="peak resident memory",
        value=peak_mb,
        unit="MB",
        n=probe["prompts"],
        interval=None,
        method="measured",
        meter=probe["meter"],
        provenance={"model": str(model), "sha256": sha256, "n_ctx": profile.n_ctx, "n_batch": profile.n_batch,
                    "parallel": profile.parallel,
                    "threads": profile.threads},
        details={
            "weights_mb": summary.weights_mb,
            "weights_meter": summary.weights_meter,
            "file_mb": summary.file_bytes / MB,
            "tensor_types": summary.tensor_types,
            "kv_cache_mb_full_attention": kv_mb,
            "kv_cache_note": (f"upper bound: {summary.block_count} layers x {profile.n_ctx} positions x "
                              f"{'f16' if summary.kv_value_bytes == 2 else 'f32'} K and V; "
                              + (f"{summary.architecture} uses a {summary.sliding_window}-token sliding window on "
                                 "some layers, which llama.cpp may cache smaller" if summary.sliding_window else "")),
            "baseline_rss_mb": probe["baseline_rss_bytes"] / MB,
            "after_load_rss_mb": probe["after_load_rss_bytes"] / MB,
            "after_answers_rss_mb": probe["after_answers_rss_bytes"] / MB,
            "model_share_of_peak_mb": (probe["peak_rss_bytes"] - probe["baseline_rss_bytes"]) / MB,
            "probe_wall_s": round(probe["wall_s"], 3),
        },
        items=[{"id": "probe", **probe}],
    )


def measure_server_memory(
    pid: int, model: Path, sha256: str, summary: GGUFSummary, profile: Profile, prompts: int,
    phone: PhoneServer | None = None,
) -> Measurement:
    """Peak resident memory of the server process that the run started (on this host, or on the phone), after
    it answered prompts."""
    from edgeready.server_process import peak_rss_bytes

    if phone is not None:
        total, peaks = phone.peak_rss_bytes()
        peak_mb = total / MB
        meter = f"VmHWM of the on-device server (pid {pid}) on {phone.where}, read over adb"
        note = ("the on-device server as the target's command started it (profile.phone.server), after it "
                "answered the gate's prompts: what the phone's kernel counted; with its child processes "
                f"summed when it has any ({ {p: round(b / MB, 1) for p, b in peaks.items()} } MB by pid)")
    else:
        peak_mb = peak_rss_bytes(pid) / MB
        meter = f"VmHWM of llama_cpp.server (pid {pid})"
        note = ("llama_cpp.server keeps logits for every position (logits_all) so that /completions can "
                "return log-probabilities: n_ctx x n_vocab floats count here")
    return Measurement(
        gate="memory",
        metric="peak resident memory of the server process",
        value=peak_mb,
        unit="MB",
        n=prompts,
        interval=None,
        method="measured",
        meter=meter,
        provenance={"model": str(model), "sha256": sha256, "n_ctx": profile.n_ctx, "n_batch": profile.n_batch,
                    "parallel": profile.parallel, "threads": profile.threads,
                    **({"measured_on": phone.measured_on()} if phone is not None else {})},
        details={
            "weights_mb": summary.weights_mb,
            "weights_meter": summary.weights_meter,
            "kv_cache_mb_full_attention": summary.kv_cache_bytes(profile.n_ctx) / MB,
            "note": note,
        },
        items=[{"id": "server", "pid": pid, "peak_rss_mb": peak_mb}],
    )


@dataclass
class MemoryInputs:
    """What to measure: a fresh probe of the device model (`server_pid` None), or the server the run started."""

    model: Path | None  # None: a device that holds no model (every query offloaded)
    sha256: str
    summary: GGUFSummary | None
    profile: Profile
    requests: list[GenerationRequest]
    prompt_style: str
    server_pid: int | None = None
    phone: PhoneServer | None = None  # the server runs on this phone (server_pid is its pid there)
    # The baseline to compare with (target `baseline.margins.memory`): its inputs to probe alike, or its peak
    # and weights read from an earlier run, or "same" for the candidate itself.
    baseline: MemoryInputs | tuple[float, float] | str | None = None
    baseline_name: str = ""
    margin: float | None = None


@register
class Memory(Gate[MemoryConfig, MemoryInputs]):
    name = "memory"
    order = 3
    config = MemoryConfig
    description = "accessibility (weights footprint, peak resident memory)"
    severity = "critical"

    def gather(self, run: RunResources, pair: Pair, cfg: MemoryConfig) -> MemoryInputs:
        # The probe answers the gate's first prompts, so peak memory includes real generation.
        requests = [qa_request(it, 16) for it in prompts_for(run, pair, cfg.probe_prompts)]
        profile = pair.target.profile
        if pair.role == "server":
            if pair.candidate.format != "gguf":
                raise MeasurementError(
                    "memory of an external endpoint cannot be measured from here: measure it on the server "
                    "host, or remove gates.memory from this target")
            run.live(pair).generate(requests)
            path, sha = run.model(pair.candidate)
            return MemoryInputs(path, sha, run.gguf(pair.candidate), profile, requests,
                                pair.candidate.prompt_style, server_pid=run.server_pid())
        if profile.phone is not None:
            return _on_phone(run, pair, requests)
        cand = run.device_candidate(pair)  # offload: the device's memory is what the target limits
        run.release()  # the probe process must not compete with a resident model
        offload = pair.candidate.offload
        if offload is not None and offload.policy == "always":
            return MemoryInputs(None, "", None, profile, [], cand.prompt_style)
        path, sha = run.model(cand)
        inputs = MemoryInputs(path, sha, run.gguf(cand), profile, requests, cand.prompt_style)
        return _with_baseline(run, pair, inputs)

    def measure(self, inputs: MemoryInputs, cfg: MemoryConfig) -> Measurement:
        if inputs.server_pid is not None:
            assert inputs.model is not None and inputs.summary is not None
            return measure_server_memory(inputs.server_pid, inputs.model, inputs.sha256, inputs.summary,
                                         inputs.profile, len(inputs.requests), inputs.phone)
        m = measure_memory(inputs.model, inputs.sha256, inputs.summary, inputs.profile, inputs.requests,
                           inputs.prompt_style)
        if inputs.margin is not None:
            m.paired = _ratio_outcome(inputs, m)
        return m

    def judge(self, m: Measurement, cfg: MemoryConfig, subject: Candidate) -> Judgement:
        checks = [
            Check("weights", m.details["weights_mb"], "<=", cfg.max_weights_mb, "MB", "GGUF tensor bytes"),
            Check("peak_rss", m.value, "<=", cfg.max_peak_rss_mb, "MB", "measured peak RSS"),
        ]
        pc = m.paired
        if pc is not None and pc.table is not None:
            limit = 1 + pc.margin
            checks += [Check("peak_vs_baseline", pc.table["peak_ratio"], "<=", limit, "x",
                             f"peak RSS / {pc.baseline}'s, same probe"),
                       Check("weights_vs_baseline", pc.table["weights_ratio"], "<=", limit, "x",
                             f"weights / {pc.baseline}'s")]
        return Judgement(checks, memory_advice(checks, subject.quantization, m.details["kv_cache_mb_full_attention"]))


def _on_phone(run: RunResources, pair: Pair, requests: list[GenerationRequest]) -> MemoryInputs:
    """The phone's server answers the prompts; its high-water mark is then read on the phone."""
    if pair.target.baseline is not None and "memory" in pair.target.baseline.margins:
        raise MeasurementError("memory against a baseline is not measured on a phone yet (one server at a time "
                               "runs there): remove baseline.margins.memory from this target")
    run.live(pair).generate(requests)
    phone = run.phone()
    if phone is None or phone.pid is None:
        raise MeasurementError("the phone's server is not running: no memory to read")
    path, sha = run.model(pair.candidate)
    return MemoryInputs(path, sha, run.gguf(pair.candidate), pair.target.profile, requests,
                        pair.candidate.prompt_style, server_pid=phone.pid, phone=phone)


def _with_baseline(run: RunResources, pair: Pair, inputs: MemoryInputs) -> MemoryInputs:
    """The device model's inputs, with what its memory is compared with when the target asks (device role)."""
    spec, base = pair.target.baseline, pair.baseline
    margin = spec.margins.get("memory") if spec is not None else None
    if margin is None or base is None:
        return inputs
    inputs.margin, inputs.baseline_name = margin, base.name
    if isinstance(base, BaselineRun):
        got = base.gate("memory")
        inputs.baseline = (float(got["value"]), float(got["measurement"]["details"]["weights_mb"]))
    elif same_model(run, run.device_candidate(pair), base, prompts=False):
        inputs.baseline = "same"
    else:
        path, sha = run.model(base)
        inputs.baseline = MemoryInputs(path, sha, run.gguf(base), inputs.profile, inputs.requests,
                                       base.prompt_style)
    return inputs


def _ratio_outcome(inputs: MemoryInputs, m: Measurement) -> PairedOutcome:
    """Peak and weights as ratios to the baseline's, probed the same way (or read from its run). One probe
    each: a measured ratio, no interval (the kernel's high-water mark varies by a few MB between probes)."""
    base = inputs.baseline
    source: Literal["model", "reports", "same model"] = "model"
    if base == "same":
        peak, weights, source = m.value, float(m.details["weights_mb"]), "same model"
    elif isinstance(base, tuple):
        (peak, weights), source = base, "reports"
    else:
        assert isinstance(base, MemoryInputs)
        theirs = measure_memory(base.model, base.sha256, base.summary, base.profile, base.requests,
                                base.prompt_style)
        peak, weights = theirs.value, float(theirs.details["weights_mb"])
    peak_ratio, weights_ratio = m.value / peak, float(m.details["weights_mb"]) / weights
    worst = max(peak_ratio, weights_ratio) - 1
    margin = inputs.margin or 0.0
    return PairedOutcome(
        baseline=inputs.baseline_name, source=source, margin=margin, alpha=0.0, n=1, loss=worst, loss_lower=worst,
        loss_upper=worst, decision="pass" if worst <= margin else "fail", stopped_by="measured",
        log_evalue_pass=0.0, log_boundary_pass=0.0,
        reason=f"peak {m.value:.0f} MB vs {peak:.0f} MB (x{peak_ratio:.3f}), weights {m.details['weights_mb']:.0f} "
               f"MB vs {weights:.0f} MB (x{weights_ratio:.3f})",
        table={"peak_ratio": peak_ratio, "weights_ratio": weights_ratio, "baseline_peak_mb": peak,
               "baseline_weights_mb": weights})
