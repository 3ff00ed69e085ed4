"""End to end: `pytest -m device` in a fresh process on the real default model."""

import json

import pytest

from edgeready.scoring.qa import score_response
from edgeready.stats import wilson
from tests.conftest import ROOT, SHARED_DATA, run_gate

FIXTURES = ROOT / "tests" / "fixtures" / "targets"
pytestmark = pytest.mark.e2e


def verdict(reports):
    return json.loads((reports / "verdict.json").read_text())


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    proc = run_gate("-m", "device", "--target", str(FIXTURES / "e2e-pass.yaml"),
                    "--target", str(FIXTURES / "e2e-fail.yaml"), "--reports", str(reports))
    return proc, reports


def test_exit_status_is_1_when_a_gate_fails(two_targets):
    proc, _ = two_targets
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "edgeready verdict" in proc.stdout
    assert "gemma3-270m-q4km@e2e-pass" in proc.stdout and "gemma3-270m-q4km@e2e-fail" in proc.stdout


def test_verdict_records_pass_and_fail_with_advice(two_targets):
    _, reports = two_targets
    doc = verdict(reports)
    by_pair = {(v["candidate"], v["target"]): v for v in doc["verdicts"]}
    ok = by_pair[("gemma3-270m-q4km", "e2e-pass")]
    bad = by_pair[("gemma3-270m-q4km", "e2e-fail")]
    assert doc["overall"] == "fail"
    assert ok["status"] == "pass" and set(ok["gates"]) == {"accuracy", "memory"}
    assert bad["status"] == "fail" and set(bad["failed"]) == {"accuracy", "memory"}
    acc = bad["gates"]["accuracy"]
    assert acc["n"] == 24 and acc["interval"]["low"] < 0.70 and acc["advice"]
    assert acc["checks"][0]["threshold"] == 0.70 and acc["checks"][0]["passed"] is False
    mem = bad["gates"]["memory"]
    assert "weights over by" in mem["advice"]
    assert mem["measurement"]["method"] == "measured"
    assert mem["measurement"]["details"]["weights_mb"] > 100
    assert 150 < mem["value"] < 1200  # a real peak RSS of a 270M model, not the pytest parent's
    assert ok["gates"]["accuracy"]["value"] == bad["gates"]["accuracy"]["value"]  # same items, greedy


def test_items_let_anyone_rescore_the_accuracy(two_targets):
    _, reports = two_targets
    doc = verdict(reports)
    acc = next(v for v in doc["verdicts"] if v["target"] == "e2e-pass")["gates"]["accuracy"]
    lines = [json.loads(x) for x in (reports / "items" / "gemma3-270m-q4km__e2e-pass__accuracy.jsonl").open()]
    assert len(lines) == acc["n"]
    rescored = sum(score_response(r["response"], r["gold"]).correct for r in lines)
    assert rescored / len(lines) == acc["value"]
    assert {r["complexity"] for r in lines} == {"simple", "complex"}
    ci = wilson(rescored, len(lines), 0.95)
    assert acc["interval"]["low"] == pytest.approx(ci.low)


def test_summary_and_allure_results_are_written(two_targets):
    _, reports = two_targets
    summary = (reports / "summary.md").read_text()
    assert "| gemma3-270m-q4km@e2e-fail | FAIL |" in summary and "next (step 1)" in summary
    results = [json.loads(p.read_text()) for p in (reports / "allure-results").glob("*-result.json")]
    labels = {(lab["name"], lab["value"]) for r in results for lab in r["labels"]}
    assert ("epic", "device/e2e-fail") in labels and ("feature", "accuracy") in labels
    assert ("story", "gemma3-270m-q4km") in labels


def test_webqsp_accuracy_is_auditable(tmp_path):
    assert (SHARED_DATA / "webqsp" / "WebQSP.train.json").is_file(), "CI runs with ../shared beside the repo"
    proc = run_gate("-m", "device and accuracy", "--target", str(FIXTURES / "e2e-webqsp.yaml"),
                    "--data-dir", str(SHARED_DATA), "--reports", str(tmp_path))
    acc = verdict(tmp_path)["verdicts"][0]["gates"]["accuracy"]
    assert acc["status"] in ("pass", "fail"), proc.stdout[-2000:]
    assert acc["measurement"]["provenance"]["dataset"] == "webqsp"
    lines = [json.loads(x) for x in (tmp_path / "items" / "gemma3-270m-q4km__e2e-webqsp__accuracy.jsonl").open()]
    assert len(lines) == 20 and all(r["gold"] and "question" in r for r in lines)
    rescored = sum(score_response(r["response"], r["gold"]).correct for r in lines)
    assert rescored == acc["measurement"]["details"]["correct"]


def test_missing_dataset_is_an_error_not_a_pass(tmp_path):
    # Found when the target is validated, before any model loads: a configuration error (exit 4) naming the
    # target file, its line and the key, and a verdict that says error.
    proc = run_gate("-m", "device and accuracy", "--target", str(FIXTURES / "e2e-webqsp.yaml"),
                    "--data-dir", str(tmp_path / "empty"), "--reports", str(tmp_path))
    assert proc.returncode == 4, proc.stdout[-2000:]
    assert f"{FIXTURES / 'e2e-webqsp.yaml'}:8: gates.accuracy.dataset.path: dataset file not found" in proc.stderr
    doc = verdict(tmp_path)
    assert doc["overall"] == "error" and "dataset file not found" in doc["note"] and doc["verdicts"] == []


def test_smollm_on_the_phone_profile(tmp_path):
    proc = run_gate("-m", "device and (accuracy or memory)", "--candidate", "smollm2-135m-q4",
                    "--target", "xiaomi-10-ultra", "--limit", "16", "--reports", str(tmp_path))
    v = verdict(tmp_path)["verdicts"][0]
    assert (v["candidate"], v["target"]) == ("smollm2-135m-q4", "xiaomi-10-ultra")
    assert set(v["gates"]) == {"accuracy", "memory"}
    assert all(g["status"] in ("pass", "fail") for g in v["gates"].values()), proc.stdout[-2000:]
    assert proc.returncode == (0 if v["status"] == "pass" else 1)


def test_parallel_run_gives_the_same_gates(two_targets, tmp_path):
    _, serial_reports = two_targets
    proc = run_gate("-m", "device", "-n", "2", "--target", str(FIXTURES / "e2e-pass.yaml"),
                    "--target", str(FIXTURES / "e2e-fail.yaml"), "--reports", str(tmp_path))
    assert proc.returncode == 1, proc.stdout[-3000:]

    def gates(reports):
        return {(v["candidate"], v["target"], g, r["status"], r["value"] if g == "accuracy" else None)
                for v in verdict(reports)["verdicts"] for g, r in v["gates"].items()}

    assert gates(tmp_path) == gates(serial_reports)
    assert len(gates(tmp_path)) == 4


def test_two_candidates_spread_over_two_workers_with_the_serial_verdicts(tmp_path):
    """-n 2 with two candidates: each worker takes one candidate (and loads its model once); the verdicts
    equal a serial run's."""
    args = ("-m", "device and accuracy", "--candidate", "gemma3-270m-q4km", "--candidate", "smollm2-135m-q4",
            "--target", str(FIXTURES / "e2e-pass.yaml"), "--no-cache")
    serial = run_gate(*args, "--reports", str(tmp_path / "serial"))
    parallel = run_gate(*args, "-n", "2", "-v", "--reports", str(tmp_path / "parallel"))
    assert serial.returncode == parallel.returncode == 0, parallel.stdout[-3000:]

    def gates(reports):
        return [(v["candidate"], g, r["status"], r["value"], r["n"])
                for v in verdict(reports)["verdicts"] for g, r in v["gates"].items()]

    assert gates(tmp_path / "parallel") == gates(tmp_path / "serial")
    assert len(gates(tmp_path / "serial")) == 2
    # Both workers ran a test: the candidates were not serialized onto one.
    assert "[gw0]" in parallel.stdout and "[gw1]" in parallel.stdout
