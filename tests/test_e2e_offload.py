"""End to end: server and offload roles with a real llama.cpp server, and a server that is down."""

import json

import psutil
import pytest

from tests.conftest import ROOT, run_gate

FIX = ROOT / "tests" / "fixtures"
pytestmark = pytest.mark.e2e


def servers_running() -> list[int]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "llama_cpp.server" in cmd:
            found.append(p.info["pid"])
    return found


def verdicts(reports):
    doc = json.loads((reports / "verdict.json").read_text())
    return {(v["candidate"], v["target"]): v for v in doc["verdicts"]}


def test_server_target_runs_a_real_server_and_stops_it(tmp_path):
    before = servers_running()
    proc = run_gate("-m", "server", "--target", str(FIX / "targets" / "e2e-server.yaml"), "--reports", str(tmp_path))
    v = verdicts(tmp_path)[("gemma3-270m-q4km", "server/e2e-server")]
    assert proc.returncode == 0 and v["status"] == "pass", proc.stdout[-3000:]
    acc, mem = v["gates"]["accuracy"], v["gates"]["memory"]
    assert acc["measurement"]["provenance"]["adapter"]["adapter"] == "openai-server"
    assert mem["measurement"]["meter"].startswith("VmHWM of llama_cpp.server")
    assert mem["value"] > mem["measurement"]["details"]["weights_mb"]
    assert servers_running() == before


def test_offload_with_the_server_down_falls_back_and_counts_each(tmp_path):
    proc = run_gate("-m", "offload", "--candidate", str(FIX / "candidates" / "offload-closed.yaml"),
                    "--target", str(FIX / "targets" / "e2e-offload.yaml"), "--reports", str(tmp_path))
    v = verdicts(tmp_path)[("offload-closed", "offload/e2e-offload")]
    # Judged, not errored; and neither gate passes a deployment whose server never answered.
    assert all(g["status"] == "fail" for g in v["gates"].values()), proc.stdout[-3000:]
    lat = v["gates"]["latency"]["measurement"]["details"]
    acc = v["gates"]["accuracy"]["measurement"]["details"]
    complex_n = acc["by_complexity"]["complex"]["n"]
    # Routed to the server and failed there: offloaded by the policy, answered by nobody on the server side.
    assert lat["fallbacks"] == complex_n > 0 and lat["answered_by_server"] == 0
    assert lat["share_offloaded"] == lat["fallback_share"] == complex_n / v["gates"]["latency"]["n"]
    assert lat["fallback_errors"] and all("connect" in e.lower() for e in lat["fallback_errors"])
    # A failed offload path fails the latency gate (max_fallback_share 0 by default), with advice saying why.
    checks = {c["name"]: c for c in v["gates"]["latency"]["checks"]}
    assert v["gates"]["latency"]["status"] == "fail" and not checks["fallbacks"]["passed"]
    assert "answered by the device instead" in v["gates"]["latency"]["advice"]
    items = [json.loads(x) for x in (tmp_path / "items" / "offload-closed__offload-e2e-offload__accuracy.jsonl").open()]
    assert sum(bool(r.get("fallback")) for r in items) == complex_n


def test_compare_puts_device_server_and_offload_side_by_side(tmp_path):
    before = servers_running()
    proc = run_gate("-m", "offload and (accuracy or latency)", "--compare", "--target",
                    str(FIX / "targets" / "e2e-offload.yaml"), "--reports", str(tmp_path))
    vs = verdicts(tmp_path)
    names = {c for c, _ in vs}
    expected = {"offload-default", "offload-default.device-only", "offload-default.server-only"}
    assert names == expected, proc.stdout[-3000:]
    share = {c: vs[(c, "offload/e2e-offload")]["gates"]["latency"]["measurement"]["details"]["share_offloaded"]
             for c in names}
    assert share["offload-default.device-only"] == 0 and share["offload-default.server-only"] == 1
    acc = vs[("offload-default", "offload/e2e-offload")]["gates"]["accuracy"]["measurement"]["details"]
    assert acc["by_complexity"]["complex"]["served_by_server"] == acc["by_complexity"]["complex"]["n"]
    assert acc["by_complexity"]["simple"]["served_by_server"] == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "Device-only vs server-only vs offload" in summary and "offload-default.server-only" in summary
    assert servers_running() == before
