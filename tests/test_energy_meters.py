"""Energy meters: the estimate runs for real; RAPL and Android run on RECORDED inputs (sysfs trees and
adb outputs written by the tests); NVML runs for real only where a GPU answers; the batching method
runs on a fake coarse counter defined here."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from edgeready.energy import (
    AndroidBatteryMeter,
    CompositeMeter,
    CpuPowerModel,
    CpuTimeEstimateMeter,
    EnergyPerQuery,
    EnergyReading,
    EnergyUnavailable,
    Meter,
    NvmlMeter,
    RaplMeter,
    battery_percent,
    battery_wh,
    joules_to_mwh,
    measure_queries,
    measuring,
    select_meter,
    trapezoid_joules,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def burn_cpu(cpu_seconds: float, max_wall_s: float = 3.0) -> int:
    """Spin until this process has used `cpu_seconds` of CPU (so a loaded CI box still burns it)."""
    cpu_end = time.process_time() + cpu_seconds
    wall_end = time.perf_counter() + max_wall_s
    n = 0
    while time.process_time() < cpu_end and time.perf_counter() < wall_end:
        n += 1
    return n


# --- estimate (real) ---------------------------------------------------------------------------


def test_estimate_on_real_cpu_time_is_proportional_to_model_and_cpu_time() -> None:
    low = CpuTimeEstimateMeter(CpuPowerModel(active_w_per_core=10.0, base_w=2.0, source="test"))
    high = CpuTimeEstimateMeter(CpuPowerModel(active_w_per_core=20.0, base_w=2.0, source="test"))
    low.start()
    high.start()
    burn_cpu(0.3)
    r_low, r_high = low.stop(), high.stop()

    for r, w in ((r_low, 10.0), (r_high, 20.0)):
        assert r.method == "estimated" and r.meter == "cpu-time-estimate"
        cpu_s, wall_s = float(r.detail["cpu_s"]), float(r.detail["wall_s"])  # type: ignore[arg-type]
        assert 0.25 <= cpu_s <= wall_s + 0.05  # one busy thread: CPU time <= wall time
        assert r.joules > 0
        assert r.joules == pytest.approx(cpu_s * w + wall_s * 2.0)
        assert r.detail["model"] == {"active_w_per_core": w, "base_w": 2.0, "source": "test"}
    # Same work seen by both (CPU time advances in 10 ms ticks), twice the per-core power: twice the
    # active energy per CPU-second.
    cpu_low, cpu_high = float(r_low.detail["cpu_s"]), float(r_high.detail["cpu_s"])  # type: ignore[arg-type]
    assert abs(cpu_high - cpu_low) <= 0.03
    assert r_high.domains["cpu-active"] / cpu_high == pytest.approx(2 * r_low.domains["cpu-active"] / cpu_low)


def test_cpu_power_model_from_profile() -> None:
    m = CpuPowerModel.from_profile({"active_w_per_core": 3.5, "idle_w": 1.2, "name": "pixel-8"})
    assert (m.active_w_per_core, m.base_w, m.source) == (3.5, 1.2, "pixel-8")


# --- RAPL on recorded sysfs trees ----------------------------------------------------------------

MAX_RANGE_UJ = 262_143_328_850  # a real package max_energy_range_uj


def write_zone(root: Path, zone: str, name: str, energy_uj: int, max_range: int = MAX_RANGE_UJ) -> None:
    d = root / zone
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text(f"{name}\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")


def set_energy(root: Path, zone: str, energy_uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{energy_uj}\n")


def recorded_tree(root: Path) -> None:
    """Layout of /sys/class/powercap on a one-socket Intel client: control dir + package + subzones."""
    (root / "intel-rapl").mkdir(parents=True)
    (root / "intel-rapl" / "enabled").write_text("1\n")
    write_zone(root, "intel-rapl:0", "package-0", 1_000_000)
    write_zone(root, "intel-rapl:0:0", "core", 500_000)
    write_zone(root, "intel-rapl:0:1", "uncore", 100_000)
    write_zone(root, "intel-rapl:0:2", "dram", 2_000_000, max_range=65_712_999_613)


def test_rapl_on_recorded_sysfs_normal_delta(tmp_path: Path) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    clock = FakeClock()
    meter = RaplMeter(tmp_path, clock=clock)
    assert meter.available() == (True, "")
    meter.start()
    set_energy(tmp_path, "intel-rapl:0", 3_500_000)
    clock.now = 1.0
    r = meter.stop()
    assert r.joules == pytest.approx(2.5)
    assert r.seconds == 1.0 and r.watts == pytest.approx(2.5)
    assert r.method == "measured" and r.meter == "rapl"
    assert r.domains == {"package-0": pytest.approx(2.5)}
    # one 2^-16 J energy unit + 1 ms of energy at 2.5 W
    assert r.resolution_j == pytest.approx(2**-16 + 2.5 * 0.001)


def test_rapl_on_recorded_sysfs_dram_included(tmp_path: Path) -> None:
    recorded_tree(tmp_path)
    meter = RaplMeter(tmp_path, clock=FakeClock())
    meter.start()
    set_energy(tmp_path, "intel-rapl:0", 3_500_000)
    set_energy(tmp_path, "intel-rapl:0:2", 2_600_000)
    r = meter.stop()
    assert r.domains == {"package-0": pytest.approx(2.5), "package-0/dram": pytest.approx(0.6)}
    assert r.joules == pytest.approx(3.1)


def test_rapl_on_recorded_sysfs_core_subdomain_ignored(tmp_path: Path) -> None:
    recorded_tree(tmp_path)
    write_zone(tmp_path, "intel-rapl:1", "psys", 9_000_000)  # platform zone: overlaps the package
    meter = RaplMeter(tmp_path, clock=FakeClock())
    meter.start()
    set_energy(tmp_path, "intel-rapl:0", 3_000_000)  # +2 J package
    set_energy(tmp_path, "intel-rapl:0:0", 2_000_000)  # +1.5 J core: already inside the package
    set_energy(tmp_path, "intel-rapl:0:1", 400_000)  # +0.3 J uncore: idem
    set_energy(tmp_path, "intel-rapl:1", 99_000_000)  # +90 J psys: idem
    r = meter.stop()
    assert r.joules == pytest.approx(2.0)
    assert set(r.domains) == {"package-0", "package-0/dram"}
    skipped = " ".join(r.detail["skipped"])  # type: ignore[arg-type]
    assert "intel-rapl:0:0 (core)" in skipped and "intel-rapl:0:1 (uncore)" in skipped
    assert "intel-rapl:1 (psys)" in skipped


def test_rapl_on_recorded_sysfs_wrap_around(tmp_path: Path) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", MAX_RANGE_UJ - 300_000)
    meter = RaplMeter(tmp_path, clock=FakeClock())
    meter.start()
    set_energy(tmp_path, "intel-rapl:0", 700_000)  # wrapped: 0.3 J before the wrap + 0.7 J after
    mid = meter.read()
    assert mid.joules == pytest.approx(1.0)
    set_energy(tmp_path, "intel-rapl:0", 1_200_000)  # read() folded the wrap in: later deltas add up
    r = meter.stop()
    assert r.joules == pytest.approx(1.5)
    assert r.detail["wraps"] == 1


def test_rapl_on_recorded_sysfs_two_sockets_and_missing_tree(tmp_path: Path) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    write_zone(tmp_path, "intel-rapl:1", "package-1", 0)
    meter = RaplMeter(tmp_path, clock=FakeClock())
    meter.start()
    set_energy(tmp_path, "intel-rapl:0", 1_000_000)
    set_energy(tmp_path, "intel-rapl:1", 2_000_000)
    assert meter.stop().joules == pytest.approx(3.0)

    ok, why = RaplMeter(tmp_path / "nowhere").available()
    assert not ok and "intel-rapl" in why


# --- Android on recorded adb outputs -------------------------------------------------------------

DEVICES_ONE = "List of devices attached\n1A2B3C4D5E\tdevice\n\n"


def gauge(current: int, voltage: int, charge: int, status: str = "Discharging") -> str:
    """What the sampling script prints on a phone (recorded format)."""
    return f"status={status}\ncurrent_now={current}\nvoltage_now={voltage}\ncharge_counter={charge}\n"


class RecordedAdb:
    """Replays recorded `adb` stdout: `adb devices` gives `devices`; each gauge read pops the next one."""

    def __init__(self, gauges: list[str], devices: str = DEVICES_ONE) -> None:
        self.gauges = list(gauges)
        self.devices = devices
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> str:
        self.calls.append(args)
        if args[1:] == ["devices"]:
            return self.devices
        assert args[1:4] == ["-s", "1A2B3C4D5E", "shell"], args
        return self.gauges.pop(0)


def run_android(adb: RecordedAdb, times: list[float], **kwargs: object) -> EnergyReading:
    """start() at times[0], read() at each middle time, stop() at the last; no sampling thread."""
    clock = FakeClock()
    meter = AndroidBatteryMeter(run=adb, interval_s=None, clock=clock, **kwargs)  # type: ignore[arg-type]
    meter.start()
    for t in times[1:-1]:
        clock.now = t
        meter.read()
    clock.now = times[-1]
    return meter.stop()


def test_android_on_recorded_adb_negative_discharge_convention() -> None:
    # Pixel-style: BatteryManager convention, negative while discharging. 0.5 A at 4.0 V = 2 W.
    adb = RecordedAdb([gauge(-500_000, 4_000_000, 3_100_000)] * 3)
    r = run_android(adb, [0.0, 1.0, 2.0])
    assert r.joules == pytest.approx(4.0)
    assert r.meter == "android-power-sampled" and r.method == "measured"
    assert r.detail["current_sign"] == "negative_discharge"
    assert r.detail["energy_from"] == "current_x_voltage"
    assert r.resolution_j == pytest.approx(2.0 * 1.0)  # one sample interval of energy


def test_android_on_recorded_adb_positive_discharge_convention() -> None:
    # Many vendor kernels report discharge as positive; same physics, same joules.
    adb = RecordedAdb([gauge(500_000, 4_000_000, 3_100_000), gauge(700_000, 3_990_000, 3_100_000),
                       gauge(500_000, 4_000_000, 3_100_000)])
    r = run_android(adb, [0.0, 1.0, 2.0])
    middle = 0.7 * 3.99
    assert r.joules == pytest.approx(0.5 * (2.0 + middle) + 0.5 * (middle + 2.0))
    assert r.detail["current_sign"] == "positive_discharge"


def test_android_on_recorded_adb_milli_units_are_rescaled() -> None:
    adb = RecordedAdb([gauge(-500, 4_000, 3_100_000)] * 2)  # kernel printing mA and mV
    r = run_android(adb, [0.0, 2.0])
    assert r.joules == pytest.approx(4.0)
    assert r.detail["current_unit"] == "mA (rescaled)" and r.detail["voltage_unit"] == "mV (rescaled)"


def test_android_on_recorded_adb_charge_counter_preferred_on_long_window() -> None:
    # 0.5 A for 360 s = 180 C = 50 000 uAh; gauge counter moves in 1 mAh steps; sampled every 10 s.
    times = [10.0 * i for i in range(37)]
    gauges = [gauge(-500_000, 4_000_000, 3_000_000 - math.floor(t * 500_000 / 3600 / 1000) * 1000)
              for t in times]
    r = run_android(RecordedAdb(gauges), times)
    assert r.detail["energy_from"] == "charge_counter" and r.meter == "android-charge-counter"
    assert r.detail["charge_drop_uah"] == 50_000 and r.detail["charge_step_uah"] == 1000
    assert r.joules == pytest.approx(50_000 * 3.6e-3 * 4.0)  # = 720 J = 0.5 A x 4 V x 360 s
    assert r.resolution_j == pytest.approx(1000 * 3.6e-3 * 4.0)


def test_android_on_recorded_adb_charging_is_rejected() -> None:
    adb = RecordedAdb([gauge(1_200_000, 4_300_000, 3_000_000, status="Charging")])
    ok, why = AndroidBatteryMeter(run=adb).available()
    assert not ok and "Discharging" in why

    plugged_mid_run = RecordedAdb([gauge(-500_000, 4_000_000, 3_000_000),
                                   gauge(300_000, 4_100_000, 3_000_000, status="Charging")])
    with pytest.raises(RuntimeError, match="not discharging"):
        run_android(plugged_mid_run, [0.0, 1.0])


def test_android_on_recorded_adb_device_listing() -> None:
    ok, why = AndroidBatteryMeter(run=RecordedAdb([], devices="List of devices attached\n\n")).available()
    assert not ok and "no device" in why
    unauthorized = RecordedAdb([], devices="List of devices attached\n1A2B3C4D5E\tunauthorized\n")
    ok, why = AndroidBatteryMeter(run=unauthorized).available()
    assert not ok and "unauthorized" in why
    ok, why = AndroidBatteryMeter(run=RecordedAdb([gauge(-400_000, 3_900_000, 2_000_000)])).available()
    assert (ok, why) == (True, "")


# --- NVML ----------------------------------------------------------------------------------------


def test_nvml_on_a_real_gpu_when_present() -> None:
    meter = NvmlMeter()
    ok, why = meter.available()
    if not ok:
        pytest.skip(why)
    with measuring(meter) as m:
        time.sleep(0.3)
    assert m.reading is not None
    assert m.reading.method == "measured" and m.reading.meter in ("nvml", "nvml-power-sampled")
    assert m.reading.joules >= 0 and m.reading.seconds > 0


class FakeNvmlWithoutEnergyCounter:
    """Stands in for pynvml on a pre-Volta board: power readable, energy counter NOT_SUPPORTED."""

    def __init__(self) -> None:
        pynvml = pytest.importorskip("pynvml")
        self.NVMLError = pynvml.NVMLError
        self._not_supported = pynvml.NVML_ERROR_NOT_SUPPORTED
        self.shutdown = False

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return "Fake P100"

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        raise self.NVMLError(self._not_supported)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 150_000  # mW


def test_nvml_sampled_fallback_integrates_power_with_fake_library() -> None:
    fake = FakeNvmlWithoutEnergyCounter()
    meter = NvmlMeter(nvml=fake, sample_interval_s=0.01)
    assert meter.available() == (True, "")
    with measuring(meter) as m:
        time.sleep(0.1)
    r = m.reading
    assert r is not None and fake.shutdown
    assert r.meter == "nvml-power-sampled" and r.method == "measured"
    assert r.detail["sample_interval_s"] == 0.01 and int(r.detail["samples"]) >= 3  # type: ignore[call-overload]
    assert r.joules == pytest.approx(150.0 * float(r.detail["sampled_span_s"]))  # type: ignore[arg-type]


# --- selection ------------------------------------------------------------------------------------


def test_select_meter_require_measured_raises_naming_counters_tried() -> None:
    real = {n: m.available() for n, m in (("rapl", RaplMeter()), ("nvml", NvmlMeter()))}
    if any(ok for ok, _ in real.values()):
        pytest.skip(f"this machine has a real counter: {real}")
    with pytest.raises(EnergyUnavailable) as exc:
        select_meter("auto", require="measured")
    assert {"rapl", "nvml", "android"} <= set(exc.value.tried)
    message = str(exc.value)
    assert "no /sys/class/powercap/intel-rapl*" in message and "nvml:" in message and "android:" in message

    with pytest.raises(EnergyUnavailable, match="estimate_model"):
        select_meter("auto", require="any")
    meter = select_meter("auto", require="any", estimate_model=CpuPowerModel(5.0))
    assert meter.method == "estimated" and isinstance(meter, Meter)
    with pytest.raises(EnergyUnavailable, match="not a measurement"):
        select_meter("estimate", estimate_model=CpuPowerModel(5.0))


# --- method: batching to resolution, baseline, derived values -------------------------------------


class FakeCoarseCounter:
    """FAKE meter: a counter that only reports whole joules (resolution 1 J), driven by the test."""

    name = "fake-coarse-counter"
    method = "measured"

    def __init__(self, idle_w: float = 0.0) -> None:
        self.idle_w = idle_w
        self.energy = 0.0  # true joules since creation
        self.now = 0.0
        self._e0 = self._t0 = 0.0

    def advance(self, seconds: float, work_j: float = 0.0) -> None:
        self.now += seconds
        self.energy += work_j + self.idle_w * seconds

    def available(self) -> tuple[bool, str]:
        return True, ""

    def start(self) -> None:
        self._e0, self._t0 = math.floor(self.energy), self.now

    def read(self) -> EnergyReading:
        return EnergyReading(joules=math.floor(self.energy) - self._e0, seconds=self.now - self._t0,
                             meter=self.name, method="measured", resolution_j=1.0)

    def stop(self) -> EnergyReading:
        return self.read()


def test_measure_queries_repeats_batches_until_the_coarse_counter_resolves() -> None:
    fake = FakeCoarseCounter()
    assert isinstance(fake, Meter)

    def run_batch(i: int) -> int:
        fake.advance(0.1, work_j=0.3)  # 4 queries, 0.3 J, 0.1 s per batch
        return 4

    w = measure_queries(fake, run_batch, min_window_s=1.0, min_rel_resolution=0.1)
    assert w.resolution_reached
    # 10 batches meet the 1 s window, but 1 J / 0.1 needs >= 10 J: floor(0.3 n) >= 10 first at n = 34.
    assert w.batches == 34 and w.queries == 136
    assert w.reading.joules == 10.0 and w.reading.relative_resolution <= 0.1
    assert w.reading.detail["resolution_reached"] is True


def test_measure_queries_subtracts_idle_baseline() -> None:
    fake = FakeCoarseCounter(idle_w=0.5)
    w = measure_queries(fake, lambda i: (fake.advance(0.1, work_j=0.3), 1)[1], min_window_s=0.5,
                        min_rel_resolution=0.1, baseline_s=2.0, sleep=fake.advance)
    assert w.baseline is not None and w.baseline.watts == pytest.approx(0.5)
    assert w.reading.baseline_w == pytest.approx(0.5)
    assert w.reading.joules == pytest.approx(w.reading.gross_joules - 0.5 * w.reading.seconds)
    # Net is the work alone, within the counter's resolution.
    assert abs(w.reading.joules - 0.3 * w.batches) <= w.reading.resolution_j
    assert w.reading.joules >= 10.0


def test_measure_queries_reports_when_resolution_is_not_reached() -> None:
    fake = FakeCoarseCounter()
    w = measure_queries(fake, lambda i: (fake.advance(0.1, work_j=0.01), 1)[1], max_batches=20)
    assert not w.resolution_reached and w.batches == 20


def test_derived_mwh_and_battery_arithmetic() -> None:
    assert joules_to_mwh(36.0) == pytest.approx(10.0)
    assert battery_wh(4500, 3.87) == pytest.approx(17.415)
    assert battery_percent(17.415 * 3600, 4500, 3.87) == pytest.approx(100.0)

    reading = EnergyReading(joules=72.0, seconds=4.0, meter="rapl", method="measured", resolution_j=0.01)
    per = EnergyPerQuery.from_reading(reading, 2, tokens=1440, battery_mah=4500, nominal_v=3.87)
    assert per.joules_per_query == 36.0 and per.mwh_per_query == pytest.approx(10.0)
    assert per.tokens_per_joule == pytest.approx(20.0)
    assert per.battery_wh == pytest.approx(17.415)
    # 100 queries x 36 J = 3600 J = 1 Wh of a 17.415 Wh pack.
    assert per.battery_pct_per_100_queries == pytest.approx(100 / 17.415)
    assert per.meter == "rapl" and per.method == "measured"


def test_reading_helpers() -> None:
    assert trapezoid_joules([(0.0, 2.0), (1.0, 4.0), (3.0, 4.0)]) == pytest.approx(3.0 + 8.0)
    r = EnergyReading(joules=10.0, seconds=4.0, meter="m", method="measured", resolution_j=0.5)
    net = r.minus_baseline(1.5)
    assert net.joules == 4.0 and net.gross_joules == 10.0 and net.minus_baseline(0.5).joules == 8.0
    assert net.to_dict()["baseline_w"] == 1.5


def test_measuring_closes_the_window_on_error() -> None:
    fake = FakeCoarseCounter()
    stopped: list[bool] = []
    original = fake.stop
    fake.stop = lambda: (stopped.append(True), original())[1]  # type: ignore[method-assign]
    with pytest.raises(ValueError), measuring(fake):
        raise ValueError("run failed")
    assert stopped == [True]


def test_composite_sums_scopes_and_an_estimate_makes_it_estimated() -> None:
    counter = FakeCoarseCounter()
    estimate = CpuTimeEstimateMeter(CpuPowerModel(active_w_per_core=0.0, base_w=0.0))
    both = CompositeMeter([counter, estimate])
    assert both.method == "estimated"
    both.start()
    counter.advance(1.0, work_j=3.0)
    r = both.stop()
    assert r.joules == pytest.approx(3.0) and r.method == "estimated"
    assert r.meter == "fake-coarse-counter+cpu-time-estimate"
    assert r.resolution_j >= 1.0
