"""A pool of endpoints of one server model (`base_urls:`): under `pytest -n 2` each xdist worker owns one.

Two real llama.cpp servers (SmolLM2, started here on 127.0.0.1); two endpoint candidates on the same pool, so
that xdist's per-candidate groups put one on each worker. Each server's access log must show the requests of
one worker, and an endpoint of the pool that is down makes its worker's gate an error, never a pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeready.server_process import LlamaCppServer, free_port
from tests.conftest import run_gate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def servers(smollm_path, tmp_path_factory) -> Iterator[list[LlamaCppServer]]:
    logs = tmp_path_factory.mktemp("pool")
    started = [LlamaCppServer(smollm_path, n_ctx=1024, threads=1, model_alias="smollm-pool", log_dir=logs / f"s{i}")
               .start() for i in (0, 1)]
    try:
        yield started
    finally:
        for s in started:
            s.stop()


def _files(tmp: Path, urls: list[str]) -> list[str]:
    target = tmp / "pool.yaml"
    target.write_text("name: pool\nrole: server\nprofile: {device: host, ram_mb: 24576, app_memory_budget_mb: 4096, "
                      "threads: 1, n_ctx: 1024}\ngates:\n  accuracy: {dataset: {kind: countries-kb}, sample_size: 6, "
                      "min_accuracy: 0.01, max_tokens: 8}\n")
    args = ["-n", "2", "-m", "server and accuracy", f"--target={target}"]
    for name in ("pool-a", "pool-b"):
        (tmp / f"{name}.yaml").write_text(
            f"name: {name}\nformat: endpoint\nstrategy: base\nbase_model: SmolLM2 behind a pool\nprompt_style: chat\n"
            f"endpoint: {{base_urls: {json.dumps(urls)}, model: smollm-pool, api: chat, timeout_s: 60,\n"
            "           max_retries: 0}\n")
        args.append(f"--candidate={tmp / f'{name}.yaml'}")
    return args


def _posts(server: LlamaCppServer) -> int:
    return len(re.findall(r"POST /v1/chat/completions", server.log_path.read_text(errors="replace")))


def test_each_worker_owns_one_endpoint_of_the_pool(servers, tmp_path):
    before = [_posts(s) for s in servers]
    proc = run_gate(*_files(tmp_path, [s.base_url for s in servers]), f"--reports={tmp_path / 'r'}")
    doc = json.loads((tmp_path / "r" / "verdict.json").read_text())
    used = {v["candidate"]: v["gates"]["accuracy"]["measurement"]["provenance"]["adapter"]["base_url"]
            for v in doc["verdicts"]}
    assert proc.returncode == 0 and doc["overall"] == "pass", proc.stdout[-2000:]
    assert sorted(used.values()) == sorted(s.base_url for s in servers)  # one endpoint per worker
    served = [_posts(s) - b for s, b in zip(servers, before, strict=True)]
    assert served == [6, 6], served  # each server answered exactly one worker's six questions


def test_a_pooled_endpoint_that_is_down_is_an_error_never_a_pass(servers, tmp_path):
    down = f"http://127.0.0.1:{free_port()}/v1"
    proc = run_gate(*_files(tmp_path, [servers[0].base_url, down]), f"--reports={tmp_path / 'r'}")
    doc = json.loads((tmp_path / "r" / "verdict.json").read_text())
    statuses = sorted(v["gates"]["accuracy"]["status"] for v in doc["verdicts"])
    assert proc.returncode == 1 and statuses == ["error", "pass"], proc.stdout[-2000:]
    err = next(v["gates"]["accuracy"]["error"] for v in doc["verdicts"] if v["status"] == "error")
    assert down in err and "connect" in err


def test_fake_phones_each_worker_meters_its_own_phone_of_the_pool():
    """No phone here: recorded `adb` replies (the fuel-gauge tests' format) stand for two identical phones."""
    from edgeready.gates.energy import EnergyConfig, meter_for
    from edgeready.pool import AdapterPool
    from edgeready.schema import Pair, Profile
    from edgeready.targets import target_model

    profile = Profile(device="two phones", ram_mb=12288, app_memory_budget_mb=1536, threads=4, n_ctx=1024,
                      adb_serials=("PHONE0", "PHONE1"))
    target = target_model().model_validate({"name": "phones", "role": "device", "profile": profile.model_dump(),
                                            "gates": {}})
    cfg = EnergyConfig(max_mwh_per_query=1.0, meter="android")
    seen: dict[int, list[list[str]]] = {}
    for worker in (0, 1, 2):
        serial = AdapterPool(Path("."), Path("."), worker=worker).device_serial(Pair(None, target))  # type: ignore[arg-type]
        calls: list[list[str]] = []

        def adb(args: list[str], calls: list[list[str]] = calls) -> str:
            calls.append(args)
            if args[1:] == ["devices"]:
                return "List of devices attached\nPHONE0\tdevice\nPHONE1\tdevice\n\n"
            return "status=Discharging\ncurrent_now=-500000\nvoltage_now=4000000\ncharge_counter=3100000\n"

        meter = meter_for(cfg, profile, pid=0, serial=serial, adb_run=adb)
        meter.start()
        meter.stop()
        seen[worker] = calls
    phone = {w: {a[2] for a in calls if a[1:2] == ["-s"]} for w, calls in seen.items()}
    assert phone == {0: {"PHONE0"}, 1: {"PHONE1"}, 2: {"PHONE0"}}
