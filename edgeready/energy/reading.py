"""What every meter returns: energy over a window, with the provenance needed to trust it.

A reading never hides how it was obtained: `method` says whether a hardware counter was read
("measured") or a model was applied ("estimated"); `meter` names the exact path (e.g.
"nvml-power-sampled" rather than "nvml"); `resolution_j` is the smallest energy difference the
reading can resolve; `baseline_w` is the idle power already subtracted from `joules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Literal

from edgeready.errors import EnergyUnavailable

__all__ = ["JOULES_PER_MWH", "EnergyReading", "EnergyUnavailable", "Method"]

Method = Literal["measured", "estimated"]

# 1 Wh = 3600 J, so 1 mWh = 3.6 J.
JOULES_PER_MWH = 3.6


@dataclass(frozen=True)
class EnergyReading:
    """Energy used over one window of `seconds`.

    `joules` is net of `baseline_w * seconds` (0 unless a baseline was subtracted). `domains`
    splits the gross energy by what was metered (RAPL package/DRAM, one GPU, ...).
    """

    joules: float
    seconds: float
    meter: str
    method: Method
    resolution_j: float
    detail: dict[str, object] = field(default_factory=dict)
    domains: dict[str, float] = field(default_factory=dict)
    baseline_w: float = 0.0

    @property
    def watts(self) -> float:
        """Mean net power over the window (0 for an empty window)."""
        return self.joules / self.seconds if self.seconds > 0 else 0.0

    @property
    def gross_joules(self) -> float:
        """Energy before the idle baseline was subtracted."""
        return self.joules + self.baseline_w * self.seconds

    @property
    def relative_resolution(self) -> float:
        """resolution / |net energy|: the quantisation error as a fraction (inf when nothing was used)."""
        return self.resolution_j / abs(self.joules) if self.joules else float("inf")

    def minus_baseline(self, baseline_w: float) -> EnergyReading:
        """The same window with `baseline_w` (idle watts) x seconds subtracted; replaces any earlier one.

        Not clamped at zero: a negative net value means the work was indistinguishable from idle,
        which a report should show rather than hide.
        """
        gross = self.gross_joules
        return replace(self, joules=gross - baseline_w * self.seconds, baseline_w=baseline_w)

    def to_dict(self) -> dict[str, object]:
        """Flat provenance record for reports (JSON-serialisable when `detail` is)."""
        return {
            "joules": self.joules,
            "gross_joules": self.gross_joules,
            "seconds": self.seconds,
            "watts": self.watts,
            "meter": self.meter,
            "method": self.method,
            "resolution_j": self.resolution_j,
            "baseline_w": self.baseline_w,
            "domains": dict(self.domains),
            "detail": dict(self.detail),
        }


def combine_method(methods: Sequence[Method]) -> Method:
    """A sum is only "measured" if every part was: one estimated term makes the total an estimate."""
    return "measured" if methods and all(m == "measured" for m in methods) else "estimated"


def trapezoid_joules(points: Sequence[tuple[float, float]]) -> float:
    """Integrate (seconds, watts) samples with the trapezoid rule; fewer than 2 samples give 0."""
    total = 0.0
    for (t0, p0), (t1, p1) in pairwise(points):
        total += 0.5 * (p0 + p1) * (t1 - t0)
    return total
