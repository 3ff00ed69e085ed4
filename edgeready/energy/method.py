"""The measuring method around a batch of queries.

1. Idle baseline: meter a short idle window first; its mean power x the run's duration is
   subtracted, so the result is the energy the work added (not what the idle machine burns anyway).
2. Window long enough: a counter with resolution R cannot resolve less than R, so batches are
   repeated until net energy >= R / min_rel_resolution and the window >= min_window_s.
3. Per-query values: see derived.EnergyPerQuery.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from edgeready.energy.derived import EnergyPerQuery
from edgeready.energy.meter import Meter
from edgeready.energy.reading import EnergyReading


def idle_baseline(meter: Meter, seconds: float, sleep: Callable[[float], None] = time.sleep) -> EnergyReading:
    """Meter `seconds` of idling; the reading's `.watts` is the baseline power to subtract."""
    meter.start()
    try:
        sleep(seconds)
    finally:
        reading = meter.stop()
    return reading


@dataclass(frozen=True)
class QueryWindow:
    """One measuring window: `reading` is net of the baseline; `resolution_reached` is False when
    `max_window_s`/`max_batches` stopped the loop first (the number is then coarser than asked)."""

    reading: EnergyReading
    queries: int
    batches: int
    resolution_reached: bool
    baseline: EnergyReading | None = None

    def per_query(
        self,
        *,
        tokens: int | None = None,
        battery_mah: float | None = None,
        nominal_v: float | None = None,
    ) -> EnergyPerQuery:
        return EnergyPerQuery.from_reading(
            self.reading, self.queries, tokens=tokens, battery_mah=battery_mah, nominal_v=nominal_v
        )


def _enough(reading: EnergyReading, min_window_s: float, min_rel_resolution: float) -> bool:
    return reading.seconds >= min_window_s and reading.joules >= reading.resolution_j / min_rel_resolution


def _batches_in_window(meter: Meter, run_batch: Callable[[int], int], baseline_w: float, min_window_s: float,
                       min_rel_resolution: float, max_window_s: float, max_batches: int | None,
                       min_batches: int) -> tuple[int, int, bool, EnergyReading]:
    """Run batches inside one meter window until it is long and resolved enough, or a limit is reached.
    Returns (queries, batches, resolution reached, the gross reading)."""
    queries = batches = 0
    reached = False
    meter.start()
    try:
        while True:
            done = run_batch(batches)
            if done < 0:
                raise ValueError("run_batch must return the number of queries it ran (>= 0)")
            queries += done
            batches += 1
            current = meter.read().minus_baseline(baseline_w)
            # min_batches: several batches give a spread, hence an interval, not just a total.
            if batches >= min_batches and _enough(current, min_window_s, min_rel_resolution):
                reached = True
                break
            if current.seconds >= max_window_s or (max_batches is not None and batches >= max_batches):
                break
    finally:
        final = meter.stop()
    return queries, batches, reached, final


def measure_queries(
    meter: Meter,
    run_batch: Callable[[int], int],
    min_window_s: float = 1.0,
    min_rel_resolution: float = 0.01,
    *,
    baseline_s: float = 0.0,
    baseline_w: float | None = None,
    max_window_s: float = 300.0,
    max_batches: int | None = None,
    min_batches: int = 1,
    sleep: Callable[[float], None] = time.sleep,
) -> QueryWindow:
    """Run `run_batch(batch_index) -> queries_done` repeatedly inside one meter window.

    Stops once the NET energy is at least `resolution_j / min_rel_resolution` (e.g. 0.01: the
    counter's quantisation is at most 1% of the result) and at least `min_window_s` elapsed, or at
    `max_window_s` / `max_batches`. The baseline is measured first for `baseline_s` seconds, unless a
    known `baseline_w` is given (e.g. shared by several runs).
    """
    if min_rel_resolution <= 0:
        raise ValueError("min_rel_resolution must be > 0")
    baseline: EnergyReading | None = None
    if baseline_w is None:
        if baseline_s > 0:
            baseline = idle_baseline(meter, baseline_s, sleep)
            baseline_w = baseline.watts
        else:
            baseline_w = 0.0

    queries, batches, reached, final = _batches_in_window(meter, run_batch, baseline_w, min_window_s,
                                                          min_rel_resolution, max_window_s, max_batches, min_batches)
    net = final.minus_baseline(baseline_w)
    detail = dict(net.detail)
    detail.update({
        "queries": queries,
        "batches": batches,
        "min_window_s": min_window_s,
        "min_rel_resolution": min_rel_resolution,
        "resolution_reached": reached,
        "baseline_s": baseline.seconds if baseline is not None else 0.0,
        "baseline_meter": baseline.meter if baseline is not None else None,
        # The baseline's own quantisation, scaled to the run: not in resolution_j (that is the
        # counter's), but part of the error budget of the net value.
        "baseline_uncertainty_j": (
            baseline.resolution_j * net.seconds / baseline.seconds
            if baseline is not None and baseline.seconds > 0 else 0.0
        ),
    })
    net = replace(net, detail=detail)
    return QueryWindow(reading=net, queries=queries, batches=batches, resolution_reached=reached,
                       baseline=baseline)
