"""Per-query figures derived from one net reading: J/query, tokens/J, mWh/query, battery %.

mWh = J / 3.6 (1 Wh = 3600 J). Battery energy Wh = mAh x nominal V / 1000, so a 4500 mAh pack at
3.87 V holds 17.415 Wh = 62 694 J. The nominal voltage is the pack's rated voltage (printed on the
battery / spec sheet), not the instantaneous `voltage_now`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeready.energy.reading import JOULES_PER_MWH, EnergyReading, Method


def joules_to_mwh(joules: float) -> float:
    return joules / JOULES_PER_MWH


def battery_wh(capacity_mah: float, nominal_v: float) -> float:
    return capacity_mah * nominal_v / 1000.0


def battery_percent(joules: float, capacity_mah: float, nominal_v: float) -> float:
    """Share of a full battery, in percent, that `joules` represents."""
    return 100.0 * joules / (battery_wh(capacity_mah, nominal_v) * 3600.0)


@dataclass(frozen=True)
class EnergyPerQuery:
    """Derived from a net reading over `queries` queries. Optional fields are None when their inputs
    (token count, battery capacity) were not given. Provenance is copied from the reading."""

    queries: int
    joules: float
    seconds: float
    joules_per_query: float
    mwh_per_query: float
    tokens: int | None
    tokens_per_joule: float | None
    battery_wh: float | None
    battery_pct_per_100_queries: float | None
    meter: str
    method: Method
    resolution_j: float
    baseline_w: float

    @classmethod
    def from_reading(
        cls,
        reading: EnergyReading,
        queries: int,
        *,
        tokens: int | None = None,
        battery_mah: float | None = None,
        nominal_v: float | None = None,
    ) -> EnergyPerQuery:
        if queries <= 0:
            raise ValueError("queries must be > 0")
        if (battery_mah is None) != (nominal_v is None):
            raise ValueError("battery_mah and nominal_v go together")
        jpq = reading.joules / queries
        wh = battery_wh(battery_mah, nominal_v) if battery_mah is not None and nominal_v is not None else None
        pct = None
        if battery_mah is not None and nominal_v is not None:
            pct = battery_percent(jpq * 100, battery_mah, nominal_v)
        return cls(
            queries=queries,
            joules=reading.joules,
            seconds=reading.seconds,
            joules_per_query=jpq,
            mwh_per_query=joules_to_mwh(jpq),
            tokens=tokens,
            tokens_per_joule=(tokens / reading.joules) if tokens is not None and reading.joules > 0 else None,
            battery_wh=wh,
            battery_pct_per_100_queries=pct,
            meter=reading.meter,
            method=reading.method,
            resolution_j=reading.resolution_j,
            baseline_w=reading.baseline_w,
        )
