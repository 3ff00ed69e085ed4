"""Background sampling for meters that expose power (or a gauge) but no energy counter.

Shared by the NVML power fallback and the Android fuel gauge. A sample is taken at start, at each
`snapshot()` (i.e. each meter `read()`), at stop, and -- when `interval_s` is set -- every
`interval_s` on a daemon thread. With `interval_s=None` no thread runs, which makes replayed
(recorded) inputs deterministic in tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Sampler(Generic[T]):
    """Collects (timestamp, value) pairs from `sample()`; timestamps are the midpoint of each call,
    because a slow source (adb round trip: tens of ms) reports the state somewhere inside the call."""

    def __init__(
        self,
        sample: Callable[[], T],
        interval_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s is not None and interval_s <= 0:
            raise ValueError("interval_s must be > 0 (or None for no background thread)")
        self._sample = sample
        self.interval_s = interval_s
        self._clock = clock
        self._points: list[tuple[float, T]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _take(self) -> None:
        t0 = self._clock()
        value = self._sample()
        t1 = self._clock()
        with self._lock:
            self._points.append(((t0 + t1) / 2, value))

    def _loop(self) -> None:
        assert self.interval_s is not None
        while not self._stop.wait(self.interval_s):
            try:
                self._take()
            except Exception as exc:
                self._error = exc
                return

    def start(self) -> None:
        with self._lock:
            self._points = []
        self._error = None
        self._stop.clear()
        self._take()
        if self.interval_s is not None:
            self._thread = threading.Thread(target=self._loop, name="energy-sampler", daemon=True)
            self._thread.start()

    def snapshot(self) -> list[tuple[float, T]]:
        """Take one sample now and return every sample so far (a copy, in time order)."""
        self._raise_if_failed()
        self._take()
        with self._lock:
            return sorted(self._points, key=lambda p: p[0])

    def stop(self) -> list[tuple[float, T]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        points = self.snapshot()
        return points

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"energy sampling failed: {self._error!r}") from self._error
