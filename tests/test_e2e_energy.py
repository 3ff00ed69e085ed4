"""End to end: the energy gate on the real default model, estimated here, honest about it."""

import json
from pathlib import Path

import pytest

from edgeready.energy import select_meter
from edgeready.energy.reading import EnergyUnavailable
from tests.conftest import ROOT, run_gate

FIXTURES = ROOT / "tests" / "fixtures" / "targets"
pytestmark = pytest.mark.e2e


def _has_counter() -> bool:
    try:
        select_meter("auto", require="measured")
    except EnergyUnavailable:
        return False
    return True


def test_phone_profile_reports_estimated_energy_mwh_and_battery(tmp_path):
    proc = run_gate("-m", "device and energy", "--target", "xiaomi-10-ultra", "--limit", "8",
                    "--reports", str(tmp_path))
    doc = json.loads((tmp_path / "verdict.json").read_text())
    gate = doc["verdicts"][0]["gates"]["energy"]
    assert gate["status"] in ("pass", "fail"), proc.stdout[-3000:]
    m = gate["measurement"]
    expected = "measured" if _has_counter() else "estimated"
    assert m["method"] == expected and (expected == "measured" or m["meter"] == "cpu-time-estimate")
    d = m["details"]
    assert d["mwh_per_query"] > 0 and d["joules_per_query"] == pytest.approx(d["mwh_per_query"] * 3.6)
    # 4500 mAh at 3.87 V = 17.415 Wh = 62,694 J: 100 queries cost 100 x J/query of that.
    assert d["battery_wh"] == pytest.approx(17.415)
    assert d["battery_pct_per_100_queries"] == pytest.approx(100 * 100 * d["joules_per_query"] / 62694, rel=1e-6)
    assert d["tokens_per_joule"] > 0 and d["batches"] >= 3
    assert gate["interval"]["method"] == "student-t" and gate["interval"]["high"] >= gate["value"]
    assert gate["checks"][0]["observed"] == gate["interval"]["high"]


def test_require_measured_is_an_error_without_a_counter(tmp_path):
    if _has_counter():
        pytest.skip("this host has an energy counter, so a measured value is possible")
    proc = run_gate("-m", "device and energy", "--target", str(FIXTURES / "e2e-energy-measured.yaml"),
                    "--reports", str(tmp_path))
    assert proc.returncode == 1 and " 1 error" in proc.stdout
    v = json.loads((Path(tmp_path) / "verdict.json").read_text())["verdicts"][0]
    assert v["status"] == "error"
    err = v["gates"]["energy"]["error"]
    assert "EnergyUnavailable" in err and "rapl" in err and "cpu-time-estimate" in err
