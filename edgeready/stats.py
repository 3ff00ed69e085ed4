"""Intervals for measurements. Every gate compares a bound, never a bare point estimate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float
    method: str


def wilson(successes: int, n: int, confidence: float) -> Interval:
    """Two-sided Wilson score interval (without continuity correction).

    Wilson rather than the normal approximation because gates often sit near 0 or 1 with small n,
    where the Wald interval collapses or leaves [0, 1]. Computed in closed form with the stdlib's normal
    quantile rather than through scipy.stats, whose import costs a second that a cached re-run would
    otherwise spend on nothing else; tests/test_stats.py checks it against scipy's binomtest.
    """
    if n <= 0:
        raise ValueError("Wilson interval needs n >= 1")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within [0, n], got {successes} of {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 and k = n the bound is exactly 0 or 1; rounding must not move it off the estimate.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return Interval(low=low, high=high, confidence=confidence, method="wilson")


def wilson_best_low(n: int, confidence: float) -> float:
    """The Wilson lower bound of n correct out of n: n / (n + z^2)."""
    z = _z(confidence)
    return n / (n + z * z)


def _z(confidence: float) -> float:
    """Two-sided normal quantile for `confidence`."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def student_t(values: list[float], confidence: float, floor: float | None = 0.0) -> Interval | None:
    """Two-sided Student-t interval of the mean of `values` (None below 2 values); its low end is also the
    one-sided lower bound at confidence (1 + confidence) / 2. `floor` clamps the low end (a rate or an energy
    is never negative; None: no clamp)."""
    if len(values) < 2:
        return None
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy import stats as sps  # here, not at import: configuration errors must not pay for scipy.stats

    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    low = mean - half if floor is None else max(floor, mean - half)
    return Interval(low=low, high=mean + half, confidence=confidence, method="student-t")
