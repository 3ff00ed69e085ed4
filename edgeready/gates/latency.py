"""Offload latency and routing: end-to-end time per query (network included) and the share offloaded.

p95 latency is compared through a distribution-free upper confidence bound: the order statistic
X(k) with the smallest k such that P(Binomial(n, 0.95) < k) >= confidence, so that the true 95th
percentile lies below X(k) with at least that confidence (no assumption on the latency distribution).
The share offloaded is compared through its Wilson upper bound. Fallbacks (server unreachable, device
answered) are counted and listed; they never pass silently: the verdict shows each one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps

from adapters.base import Adapter
from edgeready.measurement import Check, GateResult, Measurement, judge
from edgeready.records import Response
from edgeready.stats import Interval, wilson
from edgeready.targets import LatencyGate


def quantile_upper_bound(values: list[float], q: float, confidence: float) -> float:
    xs = sorted(values)
    n = len(xs)
    k = int(sps.binom.ppf(confidence, n, q)) + 1  # 1-based order statistic
    return xs[min(k, n) - 1] if k <= n else float("inf")


def measure_latency(
    adapter: Adapter, responses: list[Response], gate: LatencyGate, provenance: dict[str, Any]
) -> Measurement:
    lat = [r.timings.total_s for r in responses]
    n = len(lat)
    served = [r.served_by for r in responses]
    offloaded = sum(s == "server" for s in served)
    fallbacks = [i for i, r in enumerate(responses) if r.meta.get("fallback")]
    p95 = float(np.percentile(lat, 95))
    upper = quantile_upper_bound(lat, 0.95, gate.confidence)
    share_ci = wilson(offloaded, n, gate.confidence)
    counters = getattr(adapter, "counters", None)
    return Measurement(
        gate="latency",
        metric="p95 end-to-end latency",
        value=p95,
        unit="s",
        n=n,
        interval=Interval(low=float(np.percentile(lat, 50)), high=upper, confidence=gate.confidence,
                          method="order-statistic upper bound (low = median)"),
        method="measured",
        meter="wall clock per request + modelled network delay for offloaded requests",
        provenance={**provenance, "adapter": adapter.describe()},
        details={
            "p50_s": float(np.percentile(lat, 50)),
            "p95_s": p95,
            "p95_upper_bound_s": upper,
            "share_offloaded": offloaded / n,
            "share_offloaded_interval": [share_ci.low, share_ci.high],
            "offloaded": offloaded,
            "fallbacks": len(fallbacks),
            "fallback_errors": list(getattr(counters, "fallback_errors", []))[:20],
            "bytes_sent": getattr(counters, "bytes_sent", None),
            "bytes_received": getattr(counters, "bytes_received", None),
        },
        items=[{"id": i, "latency_s": t, "served_by": s, "fallback": i in fallbacks}
               for i, (t, s) in enumerate(zip(lat, served, strict=True))],
    )


def judge_latency(base: dict[str, str], m: Measurement, gate: LatencyGate) -> GateResult:
    d = m.details
    checks = [
        Check("p95_latency", d["p95_upper_bound_s"], "<=", gate.max_p95_s, "s", "order-statistic upper bound"),
        Check("share_offloaded", d["share_offloaded_interval"][1], "<=", gate.max_share_offloaded, "",
              "Wilson upper bound"),
    ]
    advice = ("too slow or too much offloaded: route fewer prompts to the server (a stricter heuristic or a "
              "lower cascade threshold), or make the device model good enough to keep more queries local")
    return judge(base, m, checks, advice)
