"""Several meters over the same window, summed: e.g. RAPL (CPU+DRAM) + NVML (GPU) for a
GPU-offloaded run, where either alone misses part of the work. Only combine meters whose scopes do
not overlap (RAPL and NVML do not; two meters of the same domain would double count)."""

from __future__ import annotations

from collections.abc import Sequence

from edgeready.energy.meter import Meter
from edgeready.energy.reading import EnergyReading, Method, combine_method


class CompositeMeter:
    name = "composite"

    def __init__(self, meters: Sequence[Meter]) -> None:
        if not meters:
            raise ValueError("CompositeMeter needs at least one meter")
        self.meters = list(meters)
        self.method: Method = combine_method([m.method for m in self.meters])

    def available(self) -> tuple[bool, str]:
        reasons = [f"{m.name}: {why}" for m in self.meters for ok, why in [m.available()] if not ok]
        return (not reasons, "; ".join(reasons))

    def start(self) -> None:
        started: list[Meter] = []
        try:
            for m in self.meters:
                m.start()
                started.append(m)
        except BaseException:
            for m in started:  # close what was opened (sampler threads, NVML handles)
                m.stop()
            raise

    def _combine(self, readings: list[EnergyReading]) -> EnergyReading:
        domains: dict[str, float] = {}
        for r in readings:
            domains.update({f"{r.meter}/{k}": v for k, v in r.domains.items()} or {r.meter: r.gross_joules})
        return EnergyReading(
            joules=sum(r.joules for r in readings),
            seconds=max(r.seconds for r in readings),
            meter="+".join(r.meter for r in readings),
            method=combine_method([r.method for r in readings]),
            resolution_j=sum(r.resolution_j for r in readings),
            detail={r.meter: r.to_dict() for r in readings},
            domains=domains,
            baseline_w=sum(r.baseline_w for r in readings),
        )

    def read(self) -> EnergyReading:
        return self._combine([m.read() for m in self.meters])

    def stop(self) -> EnergyReading:
        readings: list[EnergyReading] = []
        error: BaseException | None = None
        for m in self.meters:  # stop every meter even if one fails
            try:
                readings.append(m.stop())
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return self._combine(readings)
