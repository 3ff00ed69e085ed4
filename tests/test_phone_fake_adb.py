"""Running the gates on a phone over adb (edgeready/phone.py), tested with a FAKE phone: no phone is attached to
these machines, so tests/fake_phone/ stands for one (an adb that maps onto this host, a llama-server that is
llama-cpp-python's, recorded `dumpsys`, thermal and /proc outputs). Everything else is real: the model, its
server process and its VmHWM, the pytest run, the adapter, the gates. Every test that uses the fake says so in
its name."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from edgeready.errors import PhoneError
from edgeready.phone import (
    PhoneServer,
    descendants,
    parse_battery_temperature,
    parse_foreground,
    parse_free_kb,
    parse_vmhwm,
    parse_wakefulness,
    parse_zones,
)
from edgeready.schema import Phone
from edgeready.targets import resolve_target
from tests.conftest import ROOT, run_gate
from tests.fake_phone.phone import RECORDED, WORKDIR, FakePhone

SERIAL = "FAKE865A"
SHIPPED = ROOT / "thresholds" / "device" / "xiaomi-10-ultra-phone.yaml"


# -- what the phone prints (recorded outputs) --------------------------------------------------------------
def test_recorded_phone_outputs_parse():
    assert parse_vmhwm((RECORDED / "proc_status.txt").read_text()) == 412356 * 1024
    assert parse_battery_temperature((RECORDED / "dumpsys_battery.txt").read_text()) == pytest.approx(30.2)
    assert parse_wakefulness((RECORDED / "dumpsys_power_asleep.txt").read_text()) == "off"
    assert parse_wakefulness((RECORDED / "dumpsys_power_awake.txt").read_text()) == "on"
    assert parse_foreground((RECORDED / "dumpsys_activity.txt").read_text()) == "com.miui.home"
    zones = parse_zones("\n".join(f"zone {line}" for line in (RECORDED / "thermal_zones.txt").read_text().split("\n")))
    assert zones["cpu-1-1-usr"] == pytest.approx(45.1) and len(zones) == 7
    assert parse_free_kb("Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/x 100 60 40 60% /data\n") == 40
    assert parse_vmhwm("Name:\tx\nVmRSS:\t 1 kB\n") is None and parse_free_kb("nonsense") is None
    # Android 12 and later print the state differently.
    assert parse_wakefulness("  mWakefulnessRaw=Asleep\n  getWakefulnessLocked()=Asleep\n") == "off"
    assert parse_wakefulness("nothing here") is None and parse_foreground("nothing") is None


def test_process_tree_from_proc_stat_lines():
    stats = "\n".join(["1 (init) S 0 1", "100 (sh) S 1 100", "200 (llama server) S 100 100",
                        "300 (worker) R 200 100", "400 (other) S 1 400", "garbage"])
    assert sorted(descendants(100, stats)) == [100, 200, 300] and descendants(999, stats) == [999]


@given(st.lists(st.tuples(st.sampled_from(["cpu-0", "battery", "gpu", "cpu-0"]),
                          st.one_of(st.integers(1_000, 130_000), st.integers(-40_000, -1_000),
                                    st.integers(-40, 130)))))
def test_thermal_zones_keep_every_zone_in_degrees(zones):
    """Each readable zone comes back once (repeated types numbered), millidegrees and degrees both as degrees."""
    text = "\n".join(f"zone {name} {temp}" for name, temp in zones) + "\nzone broken \nzone bad x\n"
    got = parse_zones(text)
    assert len(got) == len(zones)
    for (_, temp), value in zip(zones, got.values(), strict=True):
        assert value == pytest.approx(temp / 1000 if abs(temp) >= 1000 else temp)
        assert -40 <= value <= 130


# -- the target's phone block -------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "message"), [
    ({"workdir": "/data/local/tmp"}, "workdir"),
    ({"workdir": "/data/local/tmp/../../system"}, "workdir"),
    ({"workdir": "relative/dir"}, "workdir"),
    ({"server": ["{workdir}/llama-server", "--port", "{prot}"]}, "prot"),
    ({"server": ["{workdir}/llama-server", "-m", "{model}"]}, "{port}"),
    ({"env": {"LD_LIBRARY_PATH": "{lib}"}}, "lib"),
    ({"env": {"X=1; rm -rf /data; Y": "a"}}, "not an environment variable name"),
    ({"screen": "dim"}, "screen"),
])
def test_a_bad_phone_block_is_a_config_error_naming_the_key(tmp_path, change, message):
    data = yaml.safe_load(SHIPPED.read_text())
    data["profile"]["phone"].update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="phone") as err:
        resolve_target(str(path), ROOT / "thresholds")
    assert message in str(err.value) and "bad.yaml" in str(err.value)


def test_a_phone_target_cannot_meter_the_host_or_be_a_server_target(tmp_path):
    data = yaml.safe_load(SHIPPED.read_text())
    data["gates"]["energy"]["meter"] = "rapl"
    (tmp_path / "rapl.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="cannot meter a model running on the phone"):
        resolve_target(str(tmp_path / "rapl.yaml"), ROOT / "thresholds")
    assert resolve_target("xiaomi-10-ultra-phone", ROOT / "thresholds").profile.phone == Phone(screen="off",
                                                                                              on_battery=True)
    data["gates"]["energy"]["meter"] = "android"
    data["profile"]["phone"]["on_battery"] = False
    (tmp_path / "usb.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="on_battery"):
        resolve_target(str(tmp_path / "usb.yaml"), ROOT / "thresholds")


# -- the fake phone --------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[FakePhone]:
    fake = FakePhone(tmp_path)
    try:
        yield fake
    finally:
        fake.close()


def _server(phone: FakePhone, model: Path, sha: str, **spec: object) -> PhoneServer:
    block = Phone(adb=str(phone.adb), port=_free_port(), startup_timeout_s=60, **spec)  # type: ignore[arg-type]
    return PhoneServer(block, model, sha, "Fake 865 phone", {"threads": 2, "n_ctx": 512, "n_batch": 64,
                                                            "parallel": 1}, "gemma-test")


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> tuple[Path, str]:
    import hashlib

    return gemma_path, hashlib.sha256(gemma_path.read_bytes()).hexdigest()


@pytest.mark.e2e
def test_fake_phone_server_pushes_once_answers_and_leaves_the_phone_clean(phone, gemma):
    import httpx

    phone.install_server()
    server = _server(phone, *gemma).start()
    try:
        assert server.pushed is True and phone.path(server.remote_model).stat().st_size == gemma[0].stat().st_size
        reply = httpx.post(f"{server.base_url}/completions", json={"prompt": "Paris is the capital of",
                                                                   "max_tokens": 3, "temperature": 0}, timeout=60)
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"]
        total, peaks = server.peak_rss_bytes()  # the real process's VmHWM: the model is resident
        assert total > 100 * 2**20 and list(peaks) == [server.pid] and total == peaks[server.pid]
        heat = server.temperatures()
        assert heat["battery_c"] == pytest.approx(30.2) and heat["cpu_max_c"] == pytest.approx(45.1)
        pid = server.pid
    finally:
        assert server.stop() == []
    assert not phone.running(pid) and phone.leftovers() == []
    again = _server(phone, *gemma).start()
    try:
        assert again.pushed is False and any("already on the phone" in s for s in again.steps)
    finally:
        again.stop()
    assert phone.leftovers() == []


@pytest.mark.e2e
@pytest.mark.parametrize(("setup", "step", "says"), [
    ("no_device", "connect", "no device attached"),
    ("two_devices", "connect", "several devices attached"),
    ("screen_on", "state", "the screen is on"),
    ("charging", "state", "not 'Discharging'"),
    ("no_binary", "binary", "missing or not executable"),
    ("disk_full", "push", "MB free"),
    ("server_dies", "start", "CANNOT LINK EXECUTABLE"),
])
def test_fake_phone_refuses_a_phone_not_ready_naming_device_and_step(tmp_path, gemma, setup, step, says):
    serials = {"no_device": (), "two_devices": (SERIAL, "FAKE865B")}.get(setup, (SERIAL,))
    phone = FakePhone(tmp_path, serials=serials, screen="awake" if setup == "screen_on" else "asleep")
    try:
        if setup not in ("no_binary",):
            phone.install_server(broken=setup == "server_dies")
        if setup == "disk_full":
            phone.fill_disk(10_000)
        if setup == "charging":
            phone.path("/sys/class/power_supply/battery/status").write_text("Charging\n")
        server = _server(phone, *gemma, screen="off", on_battery=True)
        with pytest.raises(PhoneError) as err:
            server.start()
        text = str(err.value)
        assert f"step '{step}'" in text and says in text and "Fake 865 phone" in text
        if setup not in ("no_device", "two_devices"):
            assert SERIAL in text
        assert phone.leftovers() == [] and server.pid is None  # nothing left running, no forward, no .part
    finally:
        phone.close()


# -- through pytest, as a release engineer runs it ------------------------------------------------------------
def _phone_target(phone: FakePhone, tmp_path: Path) -> Path:
    """The shipped phone target, pointed at the fake adb, with small samples."""
    data = yaml.safe_load(SHIPPED.read_text())
    data["name"] = "fake-phone"
    data["profile"]["phone"].update(adb=str(phone.adb), port=_free_port(), startup_timeout_s=120)
    data["profile"]["threads"] = 2
    gates = data["gates"]
    gates.pop("hallucination")
    gates.pop("conformance")
    gates["accuracy"].update(sample_size=16)
    gates["energy"].update(queries_per_batch=4, min_window_s=1.0, baseline_s=0.5, min_batches=3, max_batches=4)
    gates["speed"] = {"prompts": 12, "pp_tokens": 64, "tg_tokens": 16, "repetitions": 2, "max_throttle_pct": 95}
    path = tmp_path / "fake-phone.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.e2e
def test_fake_phone_gates_run_on_the_phone_and_say_so(phone, tmp_path):
    phone.install_server()
    target = _phone_target(phone, tmp_path)
    proc = run_gate("-m", "device", "--target", str(target), "--reports", str(tmp_path / "r"), "--no-cache")
    verdict = json.loads((tmp_path / "r" / "verdict.json").read_text())["verdicts"][0]
    gates = verdict["gates"]
    assert set(gates) == {"accuracy", "memory", "energy", "speed"}, proc.stdout[-3000:]
    for name, gate in gates.items():
        assert gate["status"] in ("pass", "fail"), (name, gate.get("error"), proc.stdout[-3000:])
        assert gate["measurement"]["provenance"]["measured_on"] == {
            "where": "phone", "serial": SERIAL, "device": "Xiaomi 10 Ultra (Snapdragon 865, 12 GB LPDDR5)"}, name
    mem, energy, speed = (gates[g]["measurement"] for g in ("memory", "energy", "speed"))
    assert f"on phone {SERIAL}" in mem["meter"] and mem["value"] > 100
    assert energy["method"] == "measured" and energy["meter"].startswith("android")
    assert energy["provenance"]["reading"]["detail"]["serial"] == SERIAL and energy["value"] > 0
    assert f"phone {SERIAL}" in speed["meter"] and speed["details"]["ttft"]["n"] == 12
    heat = speed["details"]["heat"]
    assert {"before", "during", "after"} <= set(heat) and heat["after"]["battery_c"] == pytest.approx(30.2)
    assert [c["name"] for c in gates["speed"]["checks"]] == ["throttle"]
    assert "measured_on" in json.dumps(verdict) and phone.leftovers() == []


@pytest.mark.e2e
def test_fake_phone_disconnect_mid_gate_is_an_error_and_the_next_run_starts_clean(phone, tmp_path):
    phone.install_server()
    target = _phone_target(phone, tmp_path)
    phone.drop_after(5)  # the cable comes out during the accuracy gate's questions
    proc = run_gate("-m", "device and accuracy", "--target", str(target), "--reports", str(tmp_path / "a"),
                    "--no-cache")
    assert proc.returncode == 1, proc.stdout[-3000:]
    gate = json.loads((tmp_path / "a" / "verdict.json").read_text())["verdicts"][0]["gates"]["accuracy"]
    assert gate["status"] == "error" and SERIAL in gate["error"] and "dropped" in gate["error"]
    stale = phone.server_pids()
    assert stale and all(phone.running(p) for p in stale)  # the phone could not be told to stop it
    phone.reconnect()
    proc = run_gate("-m", "device and accuracy", "--target", str(target), "--reports", str(tmp_path / "b"),
                    "--no-cache")
    gate = json.loads((tmp_path / "b" / "verdict.json").read_text())["verdicts"][0]["gates"]["accuracy"]
    assert gate["status"] in ("pass", "fail"), proc.stdout[-3000:]
    steps = gate["measurement"]["provenance"]["adapter"]["phone"]["steps"]
    assert any(f"stopped pid {stale[0]}" in s for s in steps) and not phone.running(stale[0])
    assert phone.leftovers() == []


def test_one_server_per_phone_and_a_phone_per_worker(tmp_path):
    from edgeready.pool import AdapterPool
    from edgeready.schema import Pair

    data = yaml.safe_load(SHIPPED.read_text())
    data["profile"]["adb_serials"] = ["PHONE1", "PHONE2"]
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(data))
    target = resolve_target(str(tmp_path / "pool.yaml"), ROOT / "thresholds")
    pair = Pair(None, target)  # type: ignore[arg-type]
    assert [AdapterPool(tmp_path, tmp_path, worker=w).device_serial(pair) for w in (0, 1)] == ["PHONE1", "PHONE2"]
    with pytest.raises(PhoneError, match=r"worker 2 has no phone of its own.*-n 2 at most"):
        AdapterPool(tmp_path, tmp_path, worker=2).device_serial(pair)


def test_fake_phone_workdir_is_the_only_folder_written(phone, tmp_path):
    """Every path the phone code names lies in the working folder (what `adb shell` would write)."""
    server = _server(phone, tmp_path / "m.gguf", "ab" * 32)
    assert server.remote_model.startswith(WORKDIR + "/") and server.command()[0].startswith(WORKDIR + "/")
    assert all(a.startswith(WORKDIR) or not a.startswith("/") for a in server.command())
