"""NVIDIA GPU energy through NVML (package `nvidia-ml-py`, module `pynvml`).

Preferred: `nvmlDeviceGetTotalEnergyConsumption`, a millijoule counter since driver load (Volta and
later). When a GPU lacks it, `nvmlDeviceGetPowerUsage` (milliwatts) is sampled on a background
thread at a fixed interval and integrated with the trapezoid rule; that is still a measurement of
the board, but coarser, so the reading says meter="nvml-power-sampled" with its interval. On Ampere
(except GA100) and newer, that power value is a 1 s average, so short spikes are smoothed out and the
sampled integral lags the work by up to ~1 s: keep windows well above that.
Scope: GPU board power only -- not the host CPU, DRAM or PSU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Literal

from edgeready.energy.reading import EnergyReading, trapezoid_joules
from edgeready.energy.sampling import Sampler

COUNTER_UNIT_J = 1e-3


def _import_pynvml() -> ModuleType:
    import pynvml  # deferred: the module is optional and loads a shared library lazily

    return pynvml


class NvmlMeter:
    """Sum over the selected GPUs (default: all). `nvml` may be injected (a pynvml-like module) so the
    sampled path can be exercised without a GPU."""

    name = "nvml"
    method: Literal["measured"] = "measured"

    def __init__(
        self,
        devices: Sequence[int] | None = None,
        *,
        sample_interval_s: float = 0.05,
        force_sampling: bool = False,
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.devices = list(devices) if devices is not None else None
        self.sample_interval_s = sample_interval_s
        self.force_sampling = force_sampling
        self._nvml = nvml
        self._clock = clock
        self._handles: list[Any] = []
        self._labels: list[str] = []
        self._mode: Literal["counter", "sampled"] = "counter"
        self._e0_mj: list[int] = []
        self._t0 = 0.0
        self._sampler: Sampler[list[float]] | None = None
        self._initialised = False

    def _lib(self) -> Any:
        if self._nvml is None:
            self._nvml = _import_pynvml()
        return self._nvml

    def _open(self) -> None:
        nv = self._lib()
        nv.nvmlInit()
        self._initialised = True
        count = nv.nvmlDeviceGetCount()
        indices = self.devices if self.devices is not None else list(range(count))
        if not indices:
            raise RuntimeError("NVML initialised but reports no GPU")
        self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in indices]
        self._labels = []
        for i, h in zip(indices, self._handles, strict=True):
            name = nv.nvmlDeviceGetName(h)
            self._labels.append(f"gpu{i}:{name.decode() if isinstance(name, bytes) else name}")

    def _close(self) -> None:
        if self._initialised:
            self._initialised = False
            # Shutting down must not mask the reading or the original error.
            with contextlib.suppress(self._lib().NVMLError):
                self._lib().nvmlShutdown()

    def available(self) -> tuple[bool, str]:
        try:
            nv = self._lib()
        except ImportError:
            return False, "pynvml not installed (pip install nvidia-ml-py)"
        try:
            self._open()
        except (nv.NVMLError, OSError, RuntimeError) as exc:  # LibraryNotFound, DriverNotLoaded, no GPU
            return False, f"pynvml could not initialise NVML ({exc}): no NVIDIA driver/GPU"
        finally:
            self._close()
        return True, ""

    def _energy_mj(self) -> list[int]:
        return [self._lib().nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]

    def _power_w(self) -> list[float]:
        return [self._lib().nvmlDeviceGetPowerUsage(h) / 1000.0 for h in self._handles]

    def start(self) -> None:
        self._open()
        self._mode = "sampled" if self.force_sampling else "counter"
        if self._mode == "counter":
            try:
                self._e0_mj = self._energy_mj()
            except self._lib().NVMLError:
                # Typically NOT_SUPPORTED on pre-Volta boards; any failure means: use power samples.
                self._mode = "sampled"
        self._t0 = self._clock()
        if self._mode == "sampled":
            self._sampler = Sampler(self._power_w, self.sample_interval_s, self._clock)
            self._sampler.start()

    def read(self) -> EnergyReading:
        seconds = self._clock() - self._t0
        if self._mode == "counter":
            deltas = [(e1 - e0) * COUNTER_UNIT_J for e0, e1 in zip(self._e0_mj, self._energy_mj(), strict=True)]
            domains = dict(zip(self._labels, deltas, strict=True))
            return EnergyReading(
                joules=sum(deltas),
                seconds=seconds,
                meter="nvml",
                method="measured",
                resolution_j=COUNTER_UNIT_J * len(deltas),
                domains=domains,
                detail={"mode": "total-energy-counter", "counter_unit_j": COUNTER_UNIT_J,
                        "devices": list(self._labels), "scope": "GPU board power only"},
            )
        assert self._sampler is not None
        return self._sampled_reading(self._sampler.snapshot(), seconds)

    def _sampled_reading(self, points: list[tuple[float, list[float]]], seconds: float) -> EnergyReading:
        domains = {
            label: trapezoid_joules([(t, p[i]) for t, p in points]) for i, label in enumerate(self._labels)
        }
        joules = sum(domains.values())
        span = points[-1][0] - points[0][0] if len(points) > 1 else 0.0
        mean_w = joules / span if span > 0 else 0.0
        return EnergyReading(
            joules=joules,
            seconds=seconds,
            meter="nvml-power-sampled",
            method="measured",
            # Anything between two samples is unseen: about one interval of energy is uncertain.
            resolution_j=mean_w * self.sample_interval_s,
            domains=domains,
            detail={"mode": "power-sampled", "sample_interval_s": self.sample_interval_s,
                    "samples": len(points), "integration": "trapezoid", "sampled_span_s": span,
                    "devices": list(self._labels), "scope": "GPU board power only"},
        )

    def stop(self) -> EnergyReading:
        try:
            if self._mode == "sampled" and self._sampler is not None:
                points = self._sampler.stop()
                return self._sampled_reading(points, self._clock() - self._t0)
            return self.read()
        finally:
            self._sampler = None
            self._close()
