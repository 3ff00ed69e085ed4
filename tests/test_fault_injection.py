"""Fault injection: every server and offload gate against a misbehaving HTTP server on loopback.

The server (tests/fake_server.py, a fake: it stands for a broken vLLM/llama.cpp server, which no real server
is on demand) answers every request the same faulty way: 5xx, 401/403, 429 with Retry-After, a hang, a slow
drip, a cut mid-body, malformed or wrong-shaped JSON, a huge body, or an answer that echoes the API key. For
each mode, the server role (an endpoint candidate) and the offload role (SmolLM2 on the device, the faulty
server behind it) run all their gates through the real run loop (edgeready.run.Run) and write the real
reports, and each time the same property is checked:

- no gate passes on corrupted evidence (a server that never answered properly);
- the run ends within a bounded time;
- no secret is written anywhere under the reports folder;
- the reports stay within a size bound.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from edgeready.candidates import load_candidate
from edgeready.errors import EdgereadyError
from edgeready.gates import gates
from edgeready.report import write_reports
from edgeready.run import Run
from edgeready.targets import load_target
from tests.conftest import ROOT, run_gate
from tests.fake_server import COMPLETION_BODY, FakeServer

SECRET = "sk-fault-injection-0123456789abcdef"
KEY_ENV = "EDGEREADY_FAULT_KEY"
TIMEOUT_S = 2.0
MAX_RESPONSE_BYTES = 64 * 1024
RUN_BOUND_S = 60.0  # per (mode, role): 4 questions at most a timeout each, plus the device model
REPORTS_BOUND = 1 << 20  # bytes under the reports folder


def _hang(server: FakeServer) -> Callable[[BaseHTTPRequestHandler], None]:
    def act(h: BaseHTTPRequestHandler) -> None:
        server.stopped.wait(30)
    return act


def _drip(server: FakeServer) -> Callable[[BaseHTTPRequestHandler], None]:
    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        while not server.stopped.wait(0.5):
            h.wfile.write(b" ")
            h.wfile.flush()
    return act


def _cut(server: FakeServer) -> Callable[[BaseHTTPRequestHandler], None]:
    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b'{"choices": [{"text": " Par')
        h.wfile.flush()
    return act


def _echo() -> tuple[int, dict[str, str], object]:
    body = json.loads(json.dumps(COMPLETION_BODY))
    body["choices"][0]["text"] = f" Paris (my key is {SECRET})"
    return 200, {}, body


def _huge() -> tuple[int, dict[str, str], object]:
    return 200, {}, b'{"choices": [{"text": "' + b"a" * (4 * MAX_RESPONSE_BYTES) + b'"}]}'


# mode -> the server's answer to every request, and whether its evidence is corrupted (nothing valid arrives).
MODES: dict[str, tuple[Callable[[FakeServer], object], bool]] = {
    "http_500": (lambda s: (500, {}, {"error": "internal"}), True),
    "http_401": (lambda s: (401, {}, {"error": f"bad key {SECRET}"}), True),
    "http_403": (lambda s: (403, {}, {"error": "forbidden"}), True),
    "http_429": (lambda s: (429, {"Retry-After": "0"}, {"error": "slow down"}), True),
    "hang": (_hang, True),
    "drip": (_drip, True),
    "cut": (_cut, True),
    "malformed": (lambda s: (200, {}, b"{this is not json"), True),
    "wrong_shape": (lambda s: (200, {}, {"choices": [1]}), True),
    "huge": (lambda s: _huge(), True),
    "echo_secret": (lambda s: _echo(), False),
}


def _files(tmp: Path, server: FakeServer) -> tuple[Path, Path]:
    """An endpoint candidate on the faulty server, and an offload deployment that sends complex questions to it."""
    (tmp / "endpoint.yaml").write_text(
        f"name: faulty\nformat: endpoint\nstrategy: base\nbase_model: a faulty server\nprompt_style: few-shot\n"
        f"endpoint: {{base_url: '{server.base_url}', model: m, api: completions, api_key_env: {KEY_ENV},\n"
        f"           timeout_s: {TIMEOUT_S}, max_retries: 1, max_response_bytes: {MAX_RESPONSE_BYTES}}}\n")
    (tmp / "offload.yaml").write_text(
        "name: offload-faulty\nformat: offload\nstrategy: base\nbase_model: SmolLM2 + a faulty server\n"
        "prompt_style: chat\noffload: {device: smollm2-135m-q4, server: endpoint.yaml, policy: always}\n")
    return tmp / "endpoint.yaml", tmp / "offload.yaml"


def _targets(tmp: Path) -> tuple[Path, Path]:
    profile = "{device: host, ram_mb: 24576, app_memory_budget_mb: 4096, threads: 1, n_ctx: 1024"
    gates_ = ("  accuracy: {dataset: {kind: countries-kb}, sample_size: 4, min_accuracy: 0.01, max_tokens: 8}\n")
    (tmp / "server").mkdir(exist_ok=True)
    (tmp / "offload").mkdir(exist_ok=True)
    (tmp / "server" / "faulty.yaml").write_text(
        f"name: faulty\nrole: server\nprofile: {profile}}}\ngates:\n{gates_}"
        "  hallucination: {concepts: {kind: countries-kb}, sample_size: 2, samples: 1, max_tokens: 16,\n"
        "                  scorer: ngram, max_rate: 1.0}\n")
    (tmp / "offload" / "faulty.yaml").write_text(
        f"name: faulty\nrole: offload\nprofile: {profile},\n"
        "  network: {rtt_ms: 10, uplink_mbps: 10, downlink_mbps: 40}}\n"
        f"gates:\n{gates_}  latency: {{max_p95_s: 600, max_share_offloaded: 1.0}}\n")
    return tmp / "server" / "faulty.yaml", tmp / "offload" / "faulty.yaml"


def _run(tmp: Path, candidate: Path, target: Path) -> tuple[list, float, Path]:
    reports = tmp / f"reports-{target.parent.name}"
    run = Run.create([load_candidate(candidate)], [load_target(target)], reports_dir=reports,
                     cache_dir=tmp / "cache", candidates_dir=ROOT / "candidates", use_cache=False)
    start = time.monotonic()
    try:
        for gate in gates():
            for pair in run.pairs(gate.name):
                # An EdgereadyError is recorded as the gate's error, as the pytest plugin would show it.
                with contextlib.suppress(EdgereadyError):
                    run.judge(pair, run.measure(pair, gate.name))
    finally:
        run.close()
    wall = time.monotonic() - start
    write_reports(run.results, reports, {})
    return run.results, wall, reports


@pytest.mark.e2e
@pytest.mark.parametrize("mode", list(MODES))
def test_no_false_pass_bounded_time_no_secret_bounded_reports(mode, tmp_path, monkeypatch):
    make, corrupted = MODES[mode]
    monkeypatch.setenv(KEY_ENV, SECRET)
    server = FakeServer()
    server.script = [make(server) for _ in range(500)]  # every request gets the fault
    try:
        endpoint, offload = _files(tmp_path, server)
        for candidate, target in zip((endpoint, offload), _targets(tmp_path), strict=True):
            results, wall, reports = _run(tmp_path, candidate, target)
            _check_property(mode, corrupted, results, wall, reports, f"{mode}, {target.parent.name}")
    finally:
        server.close()
    if mode == "hang":  # a fallback's latency includes the time lost waiting on the server (issue 19, item 1)
        latency = next(r for r in results if r.gate == "latency")
        fell_back = [i for i in latency.measurement.items if i["fallback"]]
        assert fell_back and all(i["latency_s"] >= TIMEOUT_S for i in fell_back)
    if mode == "echo_secret":  # the answers did carry the key: it was redacted, not lost
        items = (tmp_path / "reports-offload" / "items").glob("*.jsonl")
        assert any(f"[redacted ${KEY_ENV}]" in p.read_text() for p in items)


def _check_property(mode: str, corrupted: bool, results: list, wall: float, reports: Path, where: str) -> None:
    assert results, where
    if corrupted:
        passed = [r.gate for r in results if r.status == "pass"]
        assert not passed, f"{where}: passed on corrupted evidence: {passed}"
    assert wall < RUN_BOUND_S, f"{where}: {wall:.1f} s"
    written = [p for p in reports.rglob("*") if p.is_file()]
    assert written and sum(p.stat().st_size for p in written) < REPORTS_BOUND, where
    leaked = [p.name for p in written if SECRET.encode() in p.read_bytes()]
    assert not leaked, f"{where}: the key is written in {leaked}"


@pytest.mark.e2e
def test_an_echoed_key_reaches_no_report_format(tmp_path, monkeypatch):
    """Through pytest, as CI runs it: verdict.json, summary.md, items, Allure results and the terminal."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    server = FakeServer()
    server.script = [_echo() for _ in range(100)]
    try:
        endpoint, _ = _files(tmp_path, server)
        target, _ = _targets(tmp_path)
        reports = tmp_path / "r"
        proc = run_gate("-m", "server and accuracy", f"--candidate={endpoint}", f"--target={target}",
                        f"--reports={reports}")
    finally:
        server.close()
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    written = {p.relative_to(reports).parts[0]: p for p in reports.rglob("*") if p.is_file()}
    assert {"verdict.json", "summary.md", "items", "allure-results"} <= set(written), sorted(written)
    leaked = [str(p) for p in reports.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked and SECRET not in proc.stdout + proc.stderr, leaked
    assert f"[redacted ${KEY_ENV}]" in written["items"].read_text()
