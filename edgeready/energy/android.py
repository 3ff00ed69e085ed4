"""A phone's battery fuel gauge, read over adb while the work runs.

Each sample is one `adb shell` round trip that prints `status`, `current_now` (uA), `voltage_now`
(uV) and `charge_counter` (uAh) from /sys/class/power_supply/battery. Energy is then either
- charge-counter delta x mean voltage, preferred when the counter moved by enough of its own steps
  (`counter_min_rel`), because it is integrated by the gauge itself and misses nothing between
  samples; or
- power = |current| x voltage integrated over the samples (trapezoid), for short windows.

Vendor quirks handled here:
- Sign: Android's BatteryManager convention is negative current while discharging, but many
  kernels report discharge as positive. With `current_sign="auto"` the sign of the median sample
  decides, which is valid because the phone is required to be discharging (status check).
- Units: a few kernels report mA / mV instead of uA / uV; values too small to be micro-units for a
  running phone (|I| < 10 000, V < 100 000) are rescaled, and the choice is recorded.
The gauge measures the battery only: on USB power it sees charger current, not consumption, so
`require_discharging` (default) rejects any window where status is not "Discharging".
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from edgeready.energy.reading import EnergyReading, trapezoid_joules
from edgeready.energy.sampling import Sampler
from edgeready.errors import MeasurementError

Runner = Callable[[list[str]], str]
CurrentSign = Literal["auto", "negative_discharge", "positive_discharge"]

DEFAULT_BATTERY_DIR = "/sys/class/power_supply/battery"
_FIELDS = ("status", "current_now", "voltage_now", "charge_counter")
# 1 uAh = 3.6e-3 C; C x V = J.
_COULOMB_PER_UAH = 3.6e-3


def subprocess_runner(args: list[str]) -> str:
    """Default runner: the real adb binary; raises on a non-zero exit or after 15 s."""
    return subprocess.run(args, capture_output=True, text=True, timeout=15, check=True).stdout


@dataclass(frozen=True)
class GaugeSample:
    """Raw gauge values as the kernel printed them (None when the file is missing/unreadable)."""

    status: str
    current: int | None
    voltage: int | None
    charge_uah: int | None


def parse_devices(text: str) -> dict[str, str]:
    """`adb devices` output -> {serial: state} ("device", "unauthorized", "offline", ...)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            out[parts[0]] = parts[1]
    return out


def parse_gauge(text: str) -> GaugeSample:
    """Parse the `name=value` lines printed by the sampling script."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key] = value.strip()

    def as_int(key: str) -> int | None:
        try:
            return int(values.get(key, ""))
        except ValueError:
            return None

    return GaugeSample(
        status=values.get("status", ""),
        current=as_int("current_now"),
        voltage=as_int("voltage_now"),
        charge_uah=as_int("charge_counter"),
    )


class AndroidBatteryMeter:
    """Energy drawn from the battery of the phone `serial` (or the only connected one).

    `run` receives a full argv (starting with the adb binary) and returns stdout, so tests can replay
    recorded outputs. `interval_s=None` samples only at start/read/stop (no thread).
    """

    name = "android"
    method: Literal["measured"] = "measured"

    def __init__(
        self,
        serial: str | None = None,
        *,
        run: Runner | None = None,
        adb: str = "adb",
        battery_dir: str = DEFAULT_BATTERY_DIR,
        interval_s: float | None = 0.25,
        current_sign: CurrentSign = "auto",
        require_discharging: bool = True,
        counter_min_rel: float = 0.05,
        charge_step_uah: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.serial = serial
        self._custom_runner = run is not None
        self._run: Runner = run or subprocess_runner
        self.adb = adb
        self.battery_dir = battery_dir.rstrip("/")
        self.interval_s = interval_s
        self.current_sign = current_sign
        self.require_discharging = require_discharging
        self.counter_min_rel = counter_min_rel
        self.charge_step_uah = charge_step_uah
        self._clock = clock
        self._sampler: Sampler[GaugeSample] | None = None
        self._t0 = 0.0

    # --- adb plumbing -------------------------------------------------------------------------
    def _resolve_serial(self) -> str:
        devices = parse_devices(self._run([self.adb, "devices"]))
        ready = [s for s, state in devices.items() if state == "device"]
        if self.serial is not None:
            if devices.get(self.serial) != "device":
                raise RuntimeError(f"device {self.serial} not ready in `adb devices` ({devices or 'none'})")
            return self.serial
        if not ready:
            others = f" (listed but not usable: {devices})" if devices else ""
            raise RuntimeError(f"no device in `adb devices`{others}")
        if len(ready) > 1:
            raise RuntimeError(f"several devices connected ({ready}); pass serial=")
        return ready[0]

    def _sample(self) -> GaugeSample:
        script = (
            f"for f in {' '.join(_FIELDS)}; do echo \"$f=$(cat {self.battery_dir}/$f 2>/dev/null)\"; done"
        )
        serial = self.serial or ""
        return parse_gauge(self._run([self.adb, "-s", serial, "shell", script]))

    def available(self) -> tuple[bool, str]:
        if not self._custom_runner and shutil.which(self.adb) is None:
            return False, f"{self.adb} not on PATH (install Android platform-tools)"
        try:
            self.serial = self._resolve_serial()
            sample = self._sample()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            return False, str(exc)
        if sample.current is None or sample.voltage is None:
            return False, f"{self.battery_dir}/current_now or voltage_now unreadable (vendor path or SELinux)"
        if self.require_discharging and sample.status != "Discharging":
            return False, (
                f"battery status is {sample.status!r}, not 'Discharging': on USB/AC power the gauge sees "
                "charger current; run on battery (adb over Wi-Fi with the cable out, or a charge-disable node)"
            )
        return True, ""

    # --- window -------------------------------------------------------------------------------
    def start(self) -> None:
        self.serial = self._resolve_serial()
        self._t0 = self._clock()
        self._sampler = Sampler(self._sample, self.interval_s, self._clock)
        self._sampler.start()

    def read(self) -> EnergyReading:
        if self._sampler is None:
            raise RuntimeError("start() was not called")
        return self._reading(self._sampler.snapshot())

    def stop(self) -> EnergyReading:
        if self._sampler is None:
            raise RuntimeError("start() was not called")
        points = self._sampler.stop()
        self._sampler = None
        return self._reading(points)

    # --- arithmetic ---------------------------------------------------------------------------
    def _units(self, usable: list[tuple[float, GaugeSample]]) -> tuple[float, float, str]:
        """Scales to uA and uV (gauges report mA/mV or uA/uV) and the sign convention of discharge current."""
        currents = [s.current for _, s in usable if s.current is not None]
        voltages = [s.voltage for _, s in usable if s.voltage is not None]
        i_scale = 1000.0 if max(abs(c) for c in currents) < 10_000 else 1.0  # mA reported -> uA
        v_scale = 1000.0 if statistics.median(voltages) < 100_000 else 1.0  # mV reported -> uV
        if self.current_sign != "auto":
            return i_scale, v_scale, self.current_sign
        return i_scale, v_scale, "negative_discharge" if statistics.median(currents) < 0 else "positive_discharge"

    def _charge_drop(self, points: list[tuple[float, GaugeSample]]) -> tuple[float, float]:
        """How far the charge counter fell over the window, and its step (the counter's resolution), in uAh."""
        charges = [s.charge_uah for _, s in points if s.charge_uah is not None]
        steps = [abs(b - a) for a, b in pairwise(charges) if b != a]
        step_uah = max([self.charge_step_uah] + ([min(steps)] if steps else []))
        return (charges[0] - charges[-1] if len(charges) >= 2 else 0), step_uah

    def _reading(self, points: list[tuple[float, GaugeSample]]) -> EnergyReading:
        seconds = self._clock() - self._t0
        statuses = sorted({s.status for _, s in points})
        if self.require_discharging and statuses != ["Discharging"]:
            raise MeasurementError(f"battery not discharging during the window (status seen: {statuses})")
        usable = [(t, s) for t, s in points if s.current is not None and s.voltage is not None]
        if not usable:
            raise MeasurementError("no readable current/voltage sample in the window")
        i_scale, v_scale, sign_name = self._units(usable)
        sign = -1.0 if sign_name == "negative_discharge" else 1.0

        def volts(s: GaugeSample) -> float:
            assert s.voltage is not None
            return s.voltage * v_scale * 1e-6

        def watts(s: GaugeSample) -> float:
            assert s.current is not None
            return sign * s.current * i_scale * 1e-6 * volts(s)

        power_j = trapezoid_joules([(t, watts(s)) for t, s in usable])
        span = usable[-1][0] - usable[0][0]
        mean_v = trapezoid_joules([(t, volts(s)) for t, s in usable]) / span if span > 0 else volts(usable[0][1])
        mean_w = power_j / span if span > 0 else 0.0
        spacing = span / (len(usable) - 1) if len(usable) > 1 else 0.0

        drop_uah, step_uah = self._charge_drop(points)
        counter_j = drop_uah * _COULOMB_PER_UAH * mean_v
        use_counter = drop_uah > 0 and drop_uah >= step_uah / self.counter_min_rel

        detail: dict[str, object] = {
            "serial": self.serial,
            "battery_dir": self.battery_dir,
            "samples": len(points),
            "interval_s": self.interval_s,
            "mean_sample_spacing_s": spacing,
            "sampled_span_s": span,
            "current_sign": sign_name,
            "current_unit": "mA (rescaled)" if i_scale != 1.0 else "uA",
            "voltage_unit": "mV (rescaled)" if v_scale != 1.0 else "uV",
            "status_seen": statuses,
            "mean_voltage_v": mean_v,
            "power_integral_j": power_j,
            "charge_drop_uah": drop_uah,
            "charge_step_uah": step_uah,
            "charge_counter_j": counter_j,
            "energy_from": "charge_counter" if use_counter else "current_x_voltage",
            "scope": "whole phone as seen by the battery (SoC, screen, radios)",
        }
        if use_counter:
            return EnergyReading(
                joules=counter_j, seconds=seconds, meter="android-charge-counter", method="measured",
                resolution_j=step_uah * _COULOMB_PER_UAH * mean_v, detail=detail,
                domains={"battery": counter_j},
            )
        return EnergyReading(
            joules=power_j, seconds=seconds, meter="android-power-sampled", method="measured",
            resolution_j=mean_w * spacing, detail=detail, domains={"battery": power_j},
        )
