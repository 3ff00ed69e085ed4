"""Shards and merge: N jobs that each run `--shard I/N`, merged, give the verdict one run would have given."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from edgeready.errors import ConfigError
from edgeready.shard import assign, parse_shard
from tests.conftest import ROOT, run_gate

TARGETS = ("--target", str(ROOT / "tests/fixtures/targets/e2e-pass.yaml"),
           "--target", str(ROOT / "tests/fixtures/targets/e2e-fail.yaml"))
MATRIX = ("-m", "device and accuracy", "--candidate", "gemma3-270m-q4km", "--candidate", "smollm2-135m-q4", *TARGETS)


def _merge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeready", "merge", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def _gates(path) -> dict[tuple[str, str, str], dict]:
    doc = json.loads((path / "verdict.json").read_text())
    return {(v["candidate"], v["target"], g): r for v in doc["verdicts"] for g, r in v["gates"].items()}


def test_assignment_is_deterministic_balanced_and_keeps_pairs_whole():
    cells = [f"{g}:{c}@{t}" for g in ("accuracy", "memory") for c in "abcd" for t in ("x", "y")]
    one = assign(cells, 3, {})
    assert one == assign(list(reversed(cells)), 3, {}) and set(one.values()) == {1, 2, 3}
    loads = [sum(1 for p, s in one.items() if s == k) for k in (1, 2, 3)]
    assert max(loads) - min(loads) <= 1
    # Recorded durations move a heavy pair away from the others.
    heavy = assign(cells, 2, {**dict.fromkeys(cells, 1.0), "accuracy:a@x": 100.0})
    assert sum(1 for p, s in heavy.items() if s == heavy["a@x"]) == 1
    with pytest.raises(ConfigError):
        parse_shard("3/2")


@pytest.mark.e2e
def test_two_shards_merged_equal_one_run(tmp_path):
    cache = ("--cache-dir", str(tmp_path / "cache"))
    whole = run_gate(*MATRIX, *cache, f"--reports={tmp_path / 'whole'}")
    shards = [run_gate(*MATRIX, *cache, f"--shard={i}/2", f"--reports={tmp_path / f's{i}'}") for i in (1, 2)]
    ran = [set(json.loads((tmp_path / f"s{i}" / "verdict.json").read_text())["run"]["cells"]) for i in (1, 2)]
    assert ran[0] and ran[1] and not ran[0] & ran[1], [s.stdout[-500:] for s in shards]
    merged = _merge(str(tmp_path / "merged"), str(tmp_path / "s1"), str(tmp_path / "s2"))
    assert merged.returncode == whole.returncode == 1, merged.stdout + merged.stderr  # e2e-fail fails
    a, b = _gates(tmp_path / "whole"), _gates(tmp_path / "merged")
    assert a.keys() == b.keys() and len(a) == 4
    for key in a:
        for field in ("status", "value", "interval", "n", "checks"):
            assert a[key][field] == b[key][field], (key, field)
        assert (tmp_path / "merged" / "items" / a[key]["items_file"].rsplit("/", 1)[1]).is_file()
    doc = json.loads((tmp_path / "merged" / "verdict.json").read_text())
    assert doc["overall"] == json.loads((tmp_path / "whole" / "verdict.json").read_text())["overall"]
    assert list((tmp_path / "merged" / "allure-results").glob("*-result.json"))
    # Refused: a shard missing, a shard twice, shards of another target file.
    missing = _merge(str(tmp_path / "m1"), str(tmp_path / "s1"))
    assert missing.returncode == 4 and "no shard ran" in missing.stdout
    twice = _merge(str(tmp_path / "m2"), str(tmp_path / "s1"), str(tmp_path / "s1"))
    assert twice.returncode == 4 and "was run by two shards" in twice.stdout
    other = tmp_path / "s2-other"
    shutil.copytree(tmp_path / "s2", other)
    doc = json.loads((other / "verdict.json").read_text())
    doc["run"]["digests"]["targets"]["e2e-fail"] = "0" * 64
    (other / "verdict.json").write_text(json.dumps(doc))
    mixed = _merge(str(tmp_path / "m3"), str(tmp_path / "s1"), str(other))
    assert mixed.returncode == 4 and "differ in digests" in mixed.stdout and "e2e-fail" in mixed.stdout


@pytest.mark.e2e
def test_junit_shows_each_gates_numbers_and_the_advice(tmp_path):
    import xml.etree.ElementTree as ET

    proc = run_gate("-m", "device and accuracy", "--target", str(ROOT / "tests/fixtures/targets/e2e-fail.yaml"),
                    f"--reports={tmp_path}", f"--junitxml={tmp_path / 'junit.xml'}")
    assert proc.returncode == 1 and "PytestWarning" not in proc.stdout
    case = ET.parse(tmp_path / "junit.xml").getroot().find(".//testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["status"] == "fail" and props["n"] == "24" and props["check.accuracy"].endswith("FAIL")
    assert props["interval"].startswith("[") and "wilson" in props["interval"]
    message = case.find("failure").get("message")
    assert message.startswith("AssertionError: accuracy gate FAIL for gemma3-270m-q4km@e2e-fail: accuracy short by")
