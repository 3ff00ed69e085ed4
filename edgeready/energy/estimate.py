"""The fallback when no counter exists: CPU time x a per-core power model.

joules = cpu_seconds x active_w_per_core + base_w x wall_seconds

cpu_seconds is user + system time of the process (psutil), plus its reaped children when asked.
The model ignores frequency scaling, SIMD vs scalar power, memory/DRAM energy and idle cores, so
treat the result as an order of magnitude (often within +-50%, sometimes worse); it is always
labelled method="estimated".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import psutil

from edgeready.energy.reading import EnergyReading


@dataclass(frozen=True)
class CpuPowerModel:
    """`active_w_per_core`: watts drawn by one fully busy core above idle. `base_w`: power charged for
    every wall-clock second regardless of load (0 to count only the work). `source` says where the
    numbers come from (device profile, datasheet, a one-off wall-meter calibration)."""

    active_w_per_core: float
    base_w: float = 0.0
    source: str = "unspecified"

    def __post_init__(self) -> None:
        if self.active_w_per_core < 0 or self.base_w < 0:
            raise ValueError("power model values must be >= 0")

    @classmethod
    def from_profile(cls, profile: Mapping[str, object]) -> CpuPowerModel:
        """From a device profile mapping with `active_w_per_core` and optional `base_w`/`idle_w`."""
        if "active_w_per_core" not in profile:
            raise KeyError("device profile has no active_w_per_core")
        base = profile.get("base_w", profile.get("idle_w", 0.0))
        return cls(
            active_w_per_core=float(profile["active_w_per_core"]),  # type: ignore[arg-type]
            base_w=float(base),  # type: ignore[arg-type]
            source=str(profile.get("source", profile.get("name", "device profile"))),
        )


def _cpu_seconds(proc: psutil.Process, include_children: bool) -> float:
    t = proc.cpu_times()
    total = t.user + t.system
    if include_children:
        # Only children that have exited and been waited for are counted (kernel semantics).
        total += t.children_user + t.children_system
    return total


class CpuTimeEstimateMeter:
    """Estimated energy of one process (default: this one, which includes in-process llama.cpp
    threads). Pass `pid` to meter a separate server process."""

    name = "cpu-time-estimate"
    method: Literal["estimated"] = "estimated"

    def __init__(
        self,
        model: CpuPowerModel,
        *,
        pid: int | None = None,
        include_children: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.pid = pid
        self.include_children = include_children
        self._clock = clock
        self._proc: psutil.Process | None = None
        self._cpu0 = 0.0
        self._t0 = 0.0

    def available(self) -> tuple[bool, str]:
        try:
            _cpu_seconds(psutil.Process(self.pid), self.include_children)
        except psutil.Error as exc:
            return False, f"cannot read CPU times of pid {self.pid}: {exc}"
        return True, ""

    def start(self) -> None:
        self._proc = psutil.Process(self.pid)
        self._t0 = self._clock()
        self._cpu0 = _cpu_seconds(self._proc, self.include_children)

    def read(self) -> EnergyReading:
        if self._proc is None:
            raise RuntimeError("start() was not called")
        cpu_s = _cpu_seconds(self._proc, self.include_children) - self._cpu0
        wall_s = self._clock() - self._t0
        active_j = cpu_s * self.model.active_w_per_core
        base_j = wall_s * self.model.base_w
        # CPU times advance in clock ticks (USER_HZ, 100/s on Linux); user and system each round.
        tick_s = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
        fields = 4 if self.include_children else 2
        return EnergyReading(
            joules=active_j + base_j,
            seconds=wall_s,
            meter="cpu-time-estimate",
            method="estimated",
            resolution_j=fields * tick_s * self.model.active_w_per_core,
            domains={"cpu-active": active_j, "base": base_j},
            detail={
                "model": asdict(self.model),
                "formula": "cpu_s * active_w_per_core + wall_s * base_w",
                "cpu_s": cpu_s,
                "wall_s": wall_s,
                "pid": self._proc.pid,
                "include_children": self.include_children,
                "typical_error": "order of magnitude; ignores DVFS, SIMD load, DRAM, uncore",
            },
        )

    def stop(self) -> EnergyReading:
        return self.read()
