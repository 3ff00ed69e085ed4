"""End to end: stored generations make a re-run cheap and let a killed run resume."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from edgeready.cache import store_path
from tests.conftest import ROOT, run_gate

TARGET = ROOT / "tests" / "fixtures" / "targets" / "e2e-pass.yaml"
pytestmark = pytest.mark.e2e


def accuracy(reports):
    doc = json.loads((reports / "verdict.json").read_text())
    return doc["verdicts"][0]["gates"]["accuracy"]


def stored(cache_dir) -> int:
    path = store_path(cache_dir)
    if not path.exists():
        return 0
    with sqlite3.connect(path) as con:
        try:
            return con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_rerun_is_served_from_the_cache_with_the_same_verdict(tmp_path):
    cache = tmp_path / "cache"
    args = ("-m", "device and accuracy", "--target", str(TARGET), "--cache-dir", str(cache))
    run_gate(*args, "--reports", str(tmp_path / "a"))
    run_gate(*args, "--reports", str(tmp_path / "b"))
    first, second = accuracy(tmp_path / "a"), accuracy(tmp_path / "b")
    assert first["measurement"]["details"]["cache_hits"] == 0
    assert second["measurement"]["details"]["cache_hits"] == second["n"] == 24
    assert (first["value"], first["status"]) == (second["value"], second["status"])
    off = run_gate(*args, "--no-cache", "--reports", str(tmp_path / "c"))
    assert accuracy(tmp_path / "c")["measurement"]["details"]["cache_hits"] == 0, off.stdout[-2000:]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_run_resumes_without_regenerating_stored_items(tmp_path, sig):
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
           "-m", "device and accuracy", "--target", str(TARGET), "--cache-dir", str(cache),
           "--reports", str(tmp_path / "killed")]
    # An earlier run's pass sits in the reports folder: the killed run must not leave it there for CI to read.
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "verdict.json").write_text('{"overall": "pass", "verdicts": []}')
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while stored(cache) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, sig)  # SIGINT is Ctrl-C: pytest stops the session, SIGKILL gives it no chance
    proc.wait(timeout=120)
    kept = stored(cache)
    assert 5 <= kept < 24
    left = json.loads((tmp_path / "killed" / "verdict.json").read_text())
    # Ctrl-C lets pytest finish the session: it says interrupted. SIGKILL gives it no chance: the verdict
    # written when the run started says it was under way.
    assert left["overall"] == ("interrupted" if sig == signal.SIGINT else "running")
    if sig == signal.SIGINT:  # the gate it stopped is a broken test of the sign-off report, not a missing one
        allure = [json.loads(p.read_text()) for p in (tmp_path / "killed" / "allure-results").glob("*-result.json")]
        assert any(r["status"] == "broken" and "interrupted" in r["statusDetails"]["message"] for r in allure)
    run_gate("-m", "device and accuracy", "--target", str(TARGET), "--cache-dir", str(cache),
             "--reports", str(tmp_path / "resumed"))
    acc = accuracy(tmp_path / "resumed")
    assert acc["status"] in ("pass", "fail") and acc["n"] == 24
    assert acc["measurement"]["details"]["cache_hits"] == kept
    assert stored(cache) == 24


def test_sequential_gate_stops_early_when_far_from_the_minimum(tmp_path):
    proc = run_gate("-m", "device and accuracy", "--target", str(ROOT / "tests/fixtures/targets/e2e-sequential.yaml"),
                    "--no-cache", "--reports", str(tmp_path))
    acc = accuracy(tmp_path)
    seq = acc["measurement"]["sequential"]
    assert acc["status"] == "pass" and proc.returncode == 0, proc.stdout[-2000:]
    assert seq["decision"] == "pass" and seq["items_used"] == acc["n"] < 80 and "n=" in seq["reason"]
    assert acc["interval"]["method"] == "beta-binomial confidence sequence"
    assert acc["interval"]["low"] <= acc["value"] <= acc["interval"]["high"]
    # The check compares the very log e-value the test stopped by with log(1/alpha).
    check = acc["checks"][0]
    assert check["observed"] == seq["log_evalue_pass"] >= check["threshold"] == seq["log_boundary_pass"]


def test_sequential_gate_stops_early_at_its_fail_boundary(tmp_path):
    target = tmp_path / "seq-fail.yaml"
    target.write_text((ROOT / "tests/fixtures/targets/e2e-sequential.yaml").read_text()
                      .replace("min_accuracy: 0.10", "min_accuracy: 0.60"))
    proc = run_gate("-m", "device and accuracy", f"--target={target}", "--no-cache", "--reports", str(tmp_path / "r"))
    acc = accuracy(tmp_path / "r")
    seq = acc["measurement"]["sequential"]
    assert acc["status"] == "fail" and proc.returncode == 1, proc.stdout[-2000:]
    # Gemma answers about half: shown below 0.9 (minimum + indifference) long before 80 questions.
    assert seq["stopped_by"] == "fail boundary" and seq["items_used"] < 80
    assert "shown below 0.9 " in acc["advice"] and "inconclusive" not in acc["advice"]
    assert seq["fixed_n_equivalent"]["n"] > seq["items_used"]
