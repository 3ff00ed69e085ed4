"""The speed gate: its configuration errors (before any model loads), its judgement, and end to end on the real
default model: TTFT, pp and tg tokens/s in verdict.json and summary.md, and a failing bound named."""

import json
import math
from pathlib import Path

import pytest
import yaml

from edgeready.config_errors import ConfigError
from edgeready.gates.latency import quantile_upper_bound
from edgeready.gates.speed import REPORT_ONLY, Speed, SpeedConfig, min_requests
from edgeready.measurement import Measurement
from edgeready.targets import load_target
from tests.conftest import ROOT, run_gate

FIXTURES = ROOT / "tests" / "fixtures" / "targets"
DEVICE = (ROOT / "thresholds" / "device" / "default.yaml").read_text()
SERVER = (ROOT / "thresholds" / "server" / "default.yaml").read_text()
OFFLOAD = (ROOT / "thresholds" / "offload" / "default.yaml").read_text()


def write(tmp_path: Path, text: str, role: str) -> Path:
    path = tmp_path / role / "t.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def with_speed(text: str, block: str, **profile: object) -> str:
    """`text` (a target) with `block` as its `speed:` block, in place of any it has, and `profile` settings."""
    doc = yaml.safe_load(text)
    doc["gates"]["speed"] = yaml.safe_load(block)
    doc["profile"].update(profile)
    return yaml.safe_dump(doc, sort_keys=False)


# -- configuration errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("settings", "message"), [
    ({"pp_tokens": 0}, "pp_tokens\n.*greater than or equal to 8"),
    ({"tg_tokens": 0}, "tg_tokens\n.*greater than or equal to 1"),
    ({"repetitions": 0}, "repetitions\n.*greater than or equal to 1"),
    ({"prompts": 1}, "prompts\n.*greater than or equal to 2"),
    ({"max_ttft_p95_s": 0}, "max_ttft_p95_s\n.*greater than 0"),
    ({"min_generation_tps": -5}, "min_generation_tps\n.*greater than 0"),
    ({"confidence": 1.0}, "confidence\n.*less than 1"),
    ({"max_ttft_p95_s": 1.0, "prompts": 20}, "prompts: 20 requests cannot bound TTFT p95 .* needs at least 59"),
    ({"min_generation_tps": 10, "repetitions": 1}, "repetitions: min_generation_tps .* needs at least 2"),
    ({"min_tps": 10}, "min_tps\n.*Extra inputs are not permitted"),
])
def test_bad_values_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SpeedConfig(**settings)


def test_p95_bound_needs_59_requests_at_95_percent():
    assert min_requests(0.95, 0.95) == 59 and min_requests(0.95, 0.99) == 90
    # The order statistic of the latency gate: an observed time from exactly that many requests on.
    assert quantile_upper_bound([0.1] * 58, 0.95, 0.95) == math.inf
    assert quantile_upper_bound([0.1] * 59, 0.95, 0.95) == 0.1


@pytest.mark.parametrize(("role", "text"), [("server", SERVER), ("offload", OFFLOAD)])
def test_only_device_targets_take_a_speed_block(tmp_path, role, text):
    with pytest.raises(ConfigError, match=f"gates.speed applies to device targets only .*role is {role}"):
        load_target(write(tmp_path, with_speed(text, "{prompts: 10}"), role))


@pytest.mark.parametrize(("block", "parallel", "message"), [
    ("{pp_tokens: 2000}", 1, r"gates.speed.pp_tokens \(2000\) does not fit profile.n_ctx \(2048\): at most 1843"),
    ("{tg_tokens: 2000}", 1, r"gates.speed.tg_tokens \(2000\) and its prompt do not fit profile.n_ctx \(2048\)"),
    ("{prompts: 900}", 1, r"gates.speed.prompts \(900\) exceeds the 854 questions of gates.accuracy"),
    # Batched, each sequence has n_ctx / parallel cells: llama-bench's pp512 does not fit 128.
    ("{pp_tokens: 512}", 16, r"pp_tokens \(512\) does not fit profile.n_ctx / profile.parallel \(128\): at most 115"),
])
def test_settings_that_do_not_fit_the_target_are_refused(tmp_path, block, parallel, message):
    with pytest.raises(ConfigError, match=message):
        load_target(write(tmp_path, with_speed(DEVICE, block, n_ctx=2048, parallel=parallel), "device"))


def test_a_speed_block_on_a_server_target_stops_the_run_with_exit_4(tmp_path):
    path = write(tmp_path, with_speed(SERVER, "{prompts: 10}"), "server")
    proc = run_gate("-m", "speed", "--target", str(path), "--reports", str(tmp_path / "r"))
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "gates.speed applies to device targets only" in proc.stderr and str(path) in proc.stderr


def test_a_limit_below_what_the_ttft_bound_needs_is_a_usage_error(tmp_path):
    proc = run_gate("-m", "device and speed", "--target", "xiaomi-10-ultra", "--limit", "8",
                    "--reports", str(tmp_path))
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "gates.speed: max_ttft_p95_s needs at least 59 timed requests, --limit leaves 8" in proc.stderr


def test_the_shipped_targets_report_on_the_default_and_gate_on_the_phone():
    default = load_target(ROOT / "thresholds" / "device" / "default.yaml").gates.get("speed")
    phone = load_target(ROOT / "thresholds" / "device" / "xiaomi-10-ultra.yaml").gates.get("speed")
    assert default.max_ttft_p95_s is None and default.min_generation_tps is None
    assert phone.max_ttft_p95_s and phone.min_generation_tps and phone.prompts >= min_requests(0.95, 0.95)


# -- the judgement ------------------------------------------------------------------------------------------
def _measured(p95: float, bound: float | None, tps: float, lower: float | None) -> Measurement:
    ttft = {"p50_s": p95 / 2, "p95_s": p95, "p95_upper_bound_s": bound, "confidence": 0.95, "n": 60}
    tg = {"tokens_per_s": tps, "lower_bound_tps": lower, "confidence": 0.95, "n": 3}
    return Measurement(gate="speed", metric="time to first token, p95", value=p95, unit="s", n=60, interval=None,
                       method="measured", meter="wall clock", details={"ttft": ttft, "tg": tg})


def test_without_bounds_the_gate_passes_and_says_it_gated_nothing():
    m = _measured(0.2, None, 30, None)
    j = Speed().judge(m, SpeedConfig(), None)
    assert j.checks == [] and m.notes == [REPORT_ONLY]
    Speed().judge(m, SpeedConfig(), None)
    assert m.notes == [REPORT_ONLY]  # judged again: said once


def test_bounds_compare_the_confidence_bounds_and_advise():
    cfg = SpeedConfig(max_ttft_p95_s=0.5, min_generation_tps=20, prompts=60)
    j = Speed().judge(_measured(0.45, 0.6, 25, 18), cfg, None)
    checks = {c.name: c for c in j.checks}
    assert checks["ttft_p95"].observed == 0.6 and not checks["ttft_p95"].passed
    assert checks["generation_tps"].observed == 18 and not checks["generation_tps"].passed
    # Point estimates inside the bounds, confidence bounds outside: inconclusive, measure more.
    assert j.advice.count("inconclusive") == 2 and "more prompts" in j.advice and "more repetitions" in j.advice
    slow = Speed().judge(_measured(0.9, 1.0, 5, 4), cfg, None)
    assert "fewer bits" in slow.advice and "inconclusive" not in slow.advice
    assert all(c.passed for c in Speed().judge(_measured(0.1, 0.2, 40, 35), cfg, None).checks)


# -- end to end on the real default model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def speed_run(tmp_path_factory):
    """One process, two targets (the model loads once): report only, and an impossible tokens/s bound."""
    reports = tmp_path_factory.mktemp("speed")
    proc = run_gate("-m", "device and speed", "--target", str(FIXTURES / "e2e-speed.yaml"),
                    "--target", str(FIXTURES / "e2e-speed-fail.yaml"), "--reports", str(reports))
    doc = json.loads((reports / "verdict.json").read_text())
    return proc, reports, {v["target"]: v for v in doc["verdicts"]}


@pytest.mark.e2e
def test_speed_figures_are_measured_and_plausible(speed_run):
    proc, reports, by_target = speed_run
    g = by_target["e2e-speed"]["gates"]["speed"]
    assert g["status"] == "pass" and g["checks"] == [], proc.stdout[-3000:]
    m = g["measurement"]
    assert m["method"] == "measured" and "wall clock" in m["meter"] and REPORT_ONLY in m["notes"]
    d = m["details"]
    ttft, pp, tg, batched = d["ttft"], d["pp"], d["tg"], d["tg_batched"]
    assert ttft["n"] == 6 == g["n"] and ttft["requests_without_token"] == 0
    assert 0 < ttft["p50_s"] <= ttft["p95_s"] == g["value"] < 30
    assert ttft["p95_upper_bound_s"] is None and ttft["p95_upper_bound_needs"] == 59  # 6 requests: no bound
    # The preamble stays cached: each request evaluates its question, not the whole prompt.
    assert 0 < ttft["prompt_tokens_evaluated_mean"] < ttft["prompt_tokens_mean"]
    # pp counts the tokens llama.cpp evaluated, about the 64 asked for.
    assert pp["n"] == 2 and all(48 <= t <= 80 for t in pp["tokens_evaluated"]) and pp["label"].startswith("pp")
    assert pp["tokens_per_s"] > 0 and len(pp["samples_tps"]) == 2 and pp["sd"] is not None
    assert tg["tokens_per_s"] > 0 and tg["n"] == 2 and tg["label"] == "tg16"
    assert tg["complete"] == (tg["tokens_generated"] == [16, 16])
    assert 0 <= tg["lower_bound_tps"] <= tg["tokens_per_s"]
    # Prompt tokens go through llama.cpp in batches, generated ones one at a time.
    assert pp["tokens_per_s"] > tg["tokens_per_s"]
    # The device adapter decodes one sequence at a time unless the target asks for more (parallel > 1).
    if batched["measured"]:
        assert batched["parallel"] > 1 and batched["tokens_per_s"] > 0
    else:
        assert "one sequence at a time" in batched["reason"] and batched["parallel"] in (None, 1)
    assert d["settings"]["threads"] == 2 and d["settings"]["n_ctx"] == 1024
    kinds = [json.loads(x)["kind"] for x in Path(g["items_file"]).read_text().splitlines()]
    assert kinds.count("ttft") == 6 and kinds.count("pp") == 2 and kinds.count("tg") == 2
    summary = (reports / "summary.md").read_text()
    assert "## Speed (llama-bench style)" in summary
    row = next(line for line in summary.splitlines() if line.startswith("| gemma3-270m-q4km@e2e-speed | 0."))
    assert f"{ttft['p50_s']:.3f}" in row and "(tg16, r=2)" in row and "report only" in row
    assert "TTFT p50" in summary and "tg " in summary


@pytest.mark.e2e
def test_an_impossible_bound_fails_naming_the_speed_check(speed_run):
    proc, reports, by_target = speed_run
    assert proc.returncode == 1, proc.stdout[-3000:]
    v = by_target["e2e-speed-fail"]
    g = v["gates"]["speed"]
    assert v["status"] == "fail" and v["failed"] == ["speed"] and g["status"] == "fail"
    (check,) = g["checks"]
    assert check["name"] == "generation_tps" and check["passed"] is False and check["threshold"] == 1e9
    # The Student-t lower bound over 2 runs (0 when they differ a lot on a busy host: a rate is never below 0).
    assert 0 <= check["observed"] <= g["measurement"]["details"]["tg"]["tokens_per_s"]
    assert g["advice"].startswith("generation_tps:") and "fewer bits" in g["advice"]
    summary = (reports / "summary.md").read_text()
    assert "## speed fail for gemma3-270m-q4km@e2e-speed-fail" in summary and "generation_tps: Student-t" in summary
    assert "generation_tps FAIL" in summary


@pytest.mark.e2e
def test_batched_figures_and_memory_with_the_profile_parallel_setting(tmp_path):
    """A target with `parallel: 4`: the speed gate times 4 generation requests in one call through the real
    batched decoder, and the memory gate measures a probe process built with the same setting (its KV cache of
    4 sequences is part of the peak)."""
    reports = tmp_path / "r"
    proc = run_gate("-m", "device and (speed or memory)", "--target", str(FIXTURES / "e2e-speed-parallel.yaml"),
                    "--reports", str(reports))
    gates = json.loads((reports / "verdict.json").read_text())["verdicts"][0]["gates"]
    assert gates["speed"]["status"] == "pass", proc.stdout[-3000:]
    d = gates["speed"]["measurement"]["details"]
    b = d["tg_batched"]
    assert b["measured"] is True and b["parallel"] == 4 == d["settings"]["parallel"] and b["n"] == 2
    assert b["label"] == "tg16 x4"
    assert b["tokens_requested"] == 4 * 16 and all(0 < t <= 64 for t in b["tokens_generated"])
    assert b["speedup_vs_single"] == pytest.approx(b["tokens_per_s"] / d["tg"]["tokens_per_s"])
    assert gates["speed"]["measurement"]["provenance"]["adapter"]["parallel"] == 4
    batched = [json.loads(x) for x in Path(gates["speed"]["items_file"]).read_text().splitlines()]
    batched = [it for it in batched if it["kind"] == "tg_batched"]
    assert [sum(it["completion_tokens"]) for it in batched] == b["tokens_generated"]
    assert gates["memory"]["measurement"]["provenance"]["parallel"] == 4
