"""Intervals for measurements. Every gate compares a bound, never a bare point estimate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float
    method: str


def wilson(successes: int, n: int, confidence: float) -> Interval:
    """Two-sided Wilson score interval (scipy's implementation).

    Wilson rather than the normal approximation because gates often sit near 0 or 1 with small n,
    where the Wald interval collapses or leaves [0, 1].
    """
    if n <= 0:
        raise ValueError("Wilson interval needs n >= 1")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within [0, n], got {successes} of {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    from scipy.stats import binomtest  # imported here: target validation must stay fast

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(low=float(ci.low), high=float(ci.high), confidence=confidence, method="wilson")
