"""The one meter interface: `available()`, then `start()` ... `read()`* ... `stop()`.

Why start/read/stop rather than only a context manager: the batching method (method.py) must look
at the energy accumulated so far without closing the window, to decide whether another batch is
needed. `measuring()` wraps start/stop for the common single-window case.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edgeready.energy.reading import EnergyReading, Method


@runtime_checkable
class Meter(Protocol):
    """A source of energy readings.

    - `name`: short kind ("rapl", "nvml", "android", "cpu-time-estimate"); the reading's `meter`
      field may be more specific (e.g. "nvml-power-sampled").
    - `method`: "measured" for hardware counters, "estimated" for models.
    - `available()`: (True, "") or (False, why) -- never raises.
    - `start()`: opens a window. `read()`: energy since start, window stays open (also lets
      wrapping counters be tracked). `stop()`: closes the window and returns its reading.
    """

    name: str
    method: Method

    def available(self) -> tuple[bool, str]: ...

    def start(self) -> None: ...

    def read(self) -> EnergyReading: ...

    def stop(self) -> EnergyReading: ...


@dataclass
class Measurement:
    """Filled in when the `measuring()` block exits; `reading` is None inside the block."""

    meter: Meter
    reading: EnergyReading | None = None


@contextmanager
def measuring(meter: Meter) -> Iterator[Measurement]:
    """`with measuring(m) as w: work()` then `w.reading`. On an exception the window is still closed
    (so sampler threads stop) but no reading is kept: energy of a failed run is not a result."""
    meter.start()
    measurement = Measurement(meter)
    try:
        yield measurement
    except BaseException:
        meter.stop()
        raise
    measurement.reading = meter.stop()
