"""Offload latency and routing: end-to-end time per query (network included) and the share offloaded.

p95 latency is compared through a distribution-free upper confidence bound: the order statistic
X(k) with the smallest k such that P(Binomial(n, 0.95) < k) >= confidence, so that the true 95th
percentile lies below X(k) with at least that confidence (no assumption on the latency distribution).
The share offloaded is compared through its Wilson upper bound. Fallbacks (server unreachable, device
answered) are counted and listed; they never pass silently: the verdict shows each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from edgeready.adapters.base import Adapter
from edgeready.advice import LATENCY_ADVICE, fallback_advice
from edgeready.candidates import Candidate
from edgeready.gates.accuracy import AccuracyConfig, answers_key, questions
from edgeready.gates.base import Gate, RunResources, register
from edgeready.measurement import Check, Judgement, Measurement
from edgeready.prompts import qa_request
from edgeready.records import Response
from edgeready.schema import GateConfig, Pair, Target
from edgeready.stats import Interval, wilson


class LatencyConfig(GateConfig):
    """`gates.latency` (offload targets): end-to-end latency (network included) and the share sent to the
    server. The queries are the accuracy gate's questions."""

    max_p95_s: float = Field(gt=0)
    max_share_offloaded: float = Field(default=1.0, ge=0, le=1)
    # Requests routed to the server that it did not answer (the device did): failures of the offload path.
    # 0 by default: any fallback fails the gate, since the deployment was not measured as designed.
    max_fallback_share: float = Field(default=0.0, ge=0, le=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)

    def check_target(self, target: Target) -> None:
        if target.role != "offload":
            raise ValueError("gates.latency applies to offload targets only")
        accuracy = target.gates.get("accuracy")
        if not isinstance(accuracy, AccuracyConfig):
            raise ValueError("gates.latency times the accuracy gate's questions: the target needs gates.accuracy")
        if accuracy.mode == "sequential":
            # The latency gate (and --compare) reuse the accuracy gate's answers: they need all of them.
            raise ValueError("gates.accuracy.mode: an offload target's latency gate reuses the accuracy gate's "
                             "answers, which a sequential gate may stop early; use mode: fixed here")


@dataclass
class LatencyInputs:
    adapter: Adapter
    responses: list[Response]
    provenance: dict[str, Any]


@register
class Latency(Gate[LatencyConfig, LatencyInputs]):
    name = "latency"
    order = 5
    config = LatencyConfig
    description = "offload routing: p95 end-to-end latency and share offloaded"
    roles = ("offload",)

    def gather(self, run: RunResources, pair: Pair, cfg: LatencyConfig) -> LatencyInputs:
        adapter = run.live(pair)
        responses = run.shared(answers_key(pair), list)
        if not responses:  # the accuracy gate was deselected: answer its questions here
            acc = pair.target.gates.get("accuracy")
            assert isinstance(acc, AccuracyConfig)  # LatencyConfig.check_target
            responses.extend(adapter.generate([qa_request(it, acc.max_tokens) for it in questions(run, pair)[0]]))
        return LatencyInputs(adapter, list(responses), run.provenance(pair))

    def measure(self, inputs: LatencyInputs, cfg: LatencyConfig) -> Measurement:
        return measure_latency(inputs.adapter, inputs.responses, cfg, inputs.provenance)

    def judge(self, m: Measurement, cfg: LatencyConfig, subject: Candidate) -> Judgement:
        d = m.details
        checks = [
            Check("p95_latency", d["p95_upper_bound_s"], "<=", cfg.max_p95_s, "s", "order-statistic upper bound"),
            Check("share_offloaded", d["share_offloaded_interval"][1], "<=", cfg.max_share_offloaded, "",
                  "Wilson upper bound"),
            # With a maximum of 0 any fallback fails, so the observed share is compared (a Wilson bound is above
            # 0 even with none); otherwise its upper bound, like every other share.
            Check("fallbacks", d["fallback_share"] if cfg.max_fallback_share == 0 else d["fallback_interval"][1],
                  "<=", cfg.max_fallback_share, "", "observed share" if cfg.max_fallback_share == 0
                  else "Wilson upper bound"),
        ]
        failed = {c.name for c in checks if not c.passed}
        if "fallbacks" not in failed:
            return Judgement(checks, LATENCY_ADVICE)
        # A failed offload path comes first: latency and share measured through it say little.
        also = f"; then, if still failing: {LATENCY_ADVICE}" if failed - {"fallbacks"} else ""
        return Judgement(checks, fallback_advice(d) + also)


def quantile_upper_bound(values: list[float], q: float, confidence: float) -> float:
    xs = sorted(values)
    n = len(xs)
    from scipy import stats as sps  # here: configuration errors must not pay for scipy.stats

    k = int(sps.binom.ppf(confidence, n, q)) + 1  # 1-based order statistic
    return xs[min(k, n) - 1] if k <= n else float("inf")


def measure_latency(
    adapter: Adapter, responses: list[Response], gate: LatencyConfig, provenance: dict[str, Any]
) -> Measurement:
    lat = [r.timings.total_s for r in responses]
    n = len(lat)
    fallbacks = [i for i, r in enumerate(responses) if r.meta.get("fallback")]
    # A fallback was routed to the server and failed there: it counts as offloaded (the routing decision) and
    # as a failure of the offload path, never as a local answer.
    served = ["server-failed" if i in fallbacks else r.served_by for i, r in enumerate(responses)]
    offloaded = sum(s in ("server", "server-failed") for s in served)
    p95 = float(np.percentile(lat, 95))
    upper = quantile_upper_bound(lat, 0.95, gate.confidence)
    share_ci = wilson(offloaded, n, gate.confidence)
    fallback_ci = wilson(len(fallbacks), n, gate.confidence)
    stats = adapter.stats()
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
            "answered_by_server": sum(s == "server" for s in served),
            "fallbacks": len(fallbacks),
            "fallback_share": len(fallbacks) / n,
            "fallback_interval": [fallback_ci.low, fallback_ci.high],
            "fallback_errors": list(stats.fallback_errors)[:20],
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
        },
        items=[{"id": i, "latency_s": t, "served_by": s, "fallback": i in fallbacks}
               for i, (t, s) in enumerate(zip(lat, served, strict=True))],
    )
