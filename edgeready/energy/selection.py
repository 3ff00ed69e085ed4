"""Pick a meter: a real counter when one exists, the CPU-time estimate only when allowed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from edgeready.energy.android import AndroidBatteryMeter, Runner
from edgeready.energy.estimate import CpuPowerModel, CpuTimeEstimateMeter
from edgeready.energy.meter import Meter
from edgeready.energy.nvml import NvmlMeter
from edgeready.energy.rapl import DEFAULT_ROOT, RaplMeter
from edgeready.energy.reading import EnergyUnavailable

MeterKind = Literal["auto", "rapl", "nvml", "android", "estimate"]
CounterKind = Literal["rapl", "nvml", "android"]
Require = Literal["measured", "any"]

# Host CPU first: the in-process llama.cpp runs there. GPU-offloaded runs should ask for "nvml" or
# build CompositeMeter([RaplMeter(), NvmlMeter()]); the phone is metered only when asked or listed.
DEFAULT_ORDER: tuple[CounterKind, ...] = ("rapl", "nvml", "android")


def select_meter(
    kind: MeterKind = "auto",
    *,
    require: Require = "measured",
    order: Sequence[CounterKind] = DEFAULT_ORDER,
    estimate_model: CpuPowerModel | None = None,
    estimate_pid: int | None = None,
    rapl_root: str | Path = DEFAULT_ROOT,
    nvml_devices: Sequence[int] | None = None,
    android_serial: str | None = None,
    adb_run: Runner | None = None,
    android_adb: str = "adb",
) -> Meter:
    """Return a ready meter or raise EnergyUnavailable naming every meter tried and why it failed.

    - kind="auto": the first available counter in `order`; if none, the CPU-time estimate when
      require="any" (it needs `estimate_model`, since there is no honest default power per core).
    - an explicit counter kind: that meter or EnergyUnavailable -- never a silent substitute.
    - kind="estimate": only with require="any" (an estimate is not a measurement).
    """
    factories: dict[CounterKind, Callable[[], Meter]] = {
        "rapl": lambda: RaplMeter(rapl_root),
        "nvml": lambda: NvmlMeter(nvml_devices),
        "android": lambda: AndroidBatteryMeter(android_serial, run=adb_run, adb=android_adb),
    }
    tried: dict[str, str] = {}
    counters: Sequence[CounterKind] = order if kind == "auto" else ((kind,) if kind != "estimate" else ())
    for name in counters:
        meter = factories[name]()
        ok, why = meter.available()
        if ok:
            return meter
        tried[name] = why

    if kind in ("auto", "estimate"):
        if require == "measured":
            tried["cpu-time-estimate"] = "not a measurement (pass require='any' to accept estimates)"
        elif estimate_model is None:
            tried["cpu-time-estimate"] = "no power model (pass estimate_model=CpuPowerModel(...))"
        else:
            meter = CpuTimeEstimateMeter(estimate_model, pid=estimate_pid)
            ok, why = meter.available()
            if ok:
                return meter
            tried["cpu-time-estimate"] = why

    lines = "; ".join(f"{name}: {why}" for name, why in tried.items())
    raise EnergyUnavailable(f"no energy meter for kind={kind!r}, require={require!r}; tried {lines}", tried)
