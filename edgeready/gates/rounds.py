"""Scoring a gate's items in rounds: all at once (fixed-n) or until a sequential test decides.

The accuracy and hallucination gates share this loop; each supplies `score_round(start, stop)`, which
generates and scores items [start, stop) and returns their scores (None for an item that gave nothing to
score, such as an empty passage). Items are generated only when their round is reached, so a sequential
gate that stops early never generates the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from edgeready.sequential.base import Decision, SequentialTest, boundary
from edgeready.sequential.betting import BettingMeanTest
from edgeready.sequential.mixture import SequentialProportionTest
from edgeready.sequential.sprt import BernoulliSPRT
from edgeready.targets import AccuracyGate, HallucinationGate, SequentialOptions


def accuracy_test(gate: AccuracyGate) -> SequentialTest:
    if gate.test == "sprt":
        return BernoulliSPRT(threshold=gate.min_accuracy, alpha=gate.alpha, beta=gate.beta, delta=gate.delta)
    return SequentialProportionTest(threshold=gate.min_accuracy, alpha=gate.alpha, beta=gate.beta, delta=gate.delta)


def hallucination_test(gate: HallucinationGate) -> BettingMeanTest:
    return BettingMeanTest(threshold=gate.max_rate, alpha=gate.alpha, beta=gate.beta, delta=gate.delta)


def score_in_rounds(n_items: int, gate: SequentialOptions, test: SequentialTest | None,
                    score_round: Callable[[int, int], list[float | None]]) -> tuple[int, Decision | None]:
    """Run the rounds; return how many items were generated and the test's final decision (None when
    fixed-n). Unscorable items (None) are generated and counted but not shown to the test."""
    if test is None:
        score_round(0, n_items)
        return n_items, None
    done = 0
    decision: Decision | None = None
    while done < n_items:
        stop = min(done + gate.round_size, n_items)
        scores = [s for s in score_round(done, stop) if s is not None]
        done = stop
        decision = test.observe(scores)
        if decision.status != "continue":
            return done, decision
    why = "max_items reached" if n_items >= gate.cap else f"all {n_items} items used"
    return done, test.finish(why)


def sequential_details(gate: SequentialOptions, test: SequentialTest, decision: Decision, items_used: int,
                       cap: int, fixed_equivalent: dict[str, Any] | None) -> dict[str, Any]:
    """What the report says of a sequential gate: items used, why it stopped, the error rates it was run at,
    and how many items a fixed-n test with the same error rates would need."""
    return {
        "mode": "sequential",
        "test": test.name,
        "decision": decision.status,
        "stopped_by": "budget" if decision.by_budget else f"{decision.status} boundary",
        "items_used": items_used,
        "items_scored": decision.n,
        "max_items": cap,
        "round_size": gate.round_size,
        "alpha": test.alpha,
        "beta": test.beta,
        "delta": test.delta,
        # Unrounded: the gate's check compares exactly the number the test decided by.
        "log_evalue_pass": decision.log_evalue_pass,
        "log_evalue_fail": decision.log_evalue_fail,
        "log_boundary_pass": boundary(test.alpha),
        "reason": decision.reason,
        "fixed_n_equivalent": fixed_equivalent,
    }


def accuracy_fixed_equivalent(gate: AccuracyGate) -> dict[str, Any] | None:
    """The smallest fixed-n exact binomial test with the gate's error rates (None without a margin)."""
    from edgeready.sequential.sprt import fixed_n_design

    if gate.delta <= 0:
        return None
    d = fixed_n_design(gate.min_accuracy, gate.delta, gate.alpha, gate.beta)
    return {"n": d.n, "k_min": d.k_min, "alpha": round(d.alpha, 5), "power": round(d.power, 5),
            "how": "exact binomial test at level alpha with power 1 - beta at min_accuracy + delta"}


def mean_fixed_equivalent(gate: HallucinationGate, sd: float | None) -> dict[str, Any] | None:
    """A fixed-n one-sided z-test with the gate's error rates, sized with the observed spread of the passage
    scores: an estimate (the spread is measured, the normal approximation assumed)."""
    from scipy.stats import norm

    if sd is None or not math.isfinite(sd) or sd <= 0:
        return None
    z = norm.isf(gate.alpha) + norm.isf(gate.beta)
    return {"n": math.ceil((z * sd / gate.delta) ** 2), "sd": round(sd, 4),
            "how": "one-sided z-test at level alpha with power 1 - beta at max_rate - delta, "
                   "sized with the observed standard deviation of passage scores (estimated)"}
