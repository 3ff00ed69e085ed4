"""An always-valid sequential test of "is the accuracy p at least p_min?", checked after every round.

Method: the beta-binomial mixture confidence sequence (Robbins 1970, "Statistical methods related to
the law of the iterated logarithm", Ann. Math. Statist. 41(5):1397-1409; the conjugate-mixture
boundaries of Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic
confidence sequences", Ann. Statist. 49(2):1055-1080). E_n(m) below is also the prior-to-posterior
density ratio at m, the "prior-posterior martingale" of Waudby-Smith & Ramdas 2020 (NeurIPS).

For k successes in n binary scores and a Beta(a, b) mixing prior fixed before any data is seen,

    E_n(m) = B(a + k, b + n - k) / B(a, b) / (m^k (1 - m)^(n - k))

is the likelihood ratio of the Bayes mixture against the point value m. When the scores are
Bernoulli(m) given the past, E_n(m) is a nonnegative martingale with E_0 = 1, so by Ville's inequality
P_m(E_n(m) >= 1/alpha for some n) <= alpha. Hence C_n(alpha) = {m : E_n(m) < 1/alpha} is a confidence
sequence: P_p(p is outside C_n(alpha) for some n >= 1) <= alpha. C_n is a likelihood super-level set
of a concave log-likelihood, so it is an interval [L_n, U_n], and it always holds k/n because the
mixture likelihood never exceeds the maximum likelihood.

Decision, after each round:
- "pass" when L_n(alpha) >= p_min,
- "fail" when U_n(beta) < p_min + delta (delta >= 0 is an optional indifference zone),
- otherwise "continue".

Guarantees (exact, finite-sample, under optional stopping and continuation, whatever the round sizes):
- sup_{p <= p_min} P_p(the test ever passes) <= alpha: for p <= p_min a pass puts p below L_n.
- sup_{p >= p_min + delta} P_p(the test ever fails) <= beta: for such p a fail puts p above U_n.
Both hold at once, without splitting alpha, because they concern disjoint values of p.
Stopping at max_items without a verdict is reported as a fail ("not shown to meet the minimum"), which
can only lower the false-pass rate; it is what keeps the alpha guarantee of the gate.

Assumption: the score of each item, given the earlier ones, is Bernoulli(p), i.e. items come in an
order fixed before scoring and are exchangeable draws from the population the gate is about. The
stratified sampler interleaves strata so any prefix keeps the mix; never order items by difficulty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Literal

import numpy as np
from scipy.optimize import brentq
from scipy.special import betaln

Status = Literal["pass", "fail", "continue"]

# Prior pseudo-counts, centred on the threshold: Beta(c * p_min, c * (1 - p_min)). A prior near the
# threshold spends its mass where the decision is hard. Of c in {1, 2, 4, 8, 16, 32}, c = 8 used the
# fewest items on average over p_true - p_min in {+-0.1, +-0.2, +-0.3} at p_min in {0.35, 0.6, 0.8}
# (alpha 0.05, rounds of 10, at most 400 items; docs/SEQUENTIAL.md). Any c > 0 is valid: the prior is
# fixed before data, which is all the martingale argument needs.
DEFAULT_PRIOR_WEIGHT = 8.0

# Roots are found on [_EPS, 1 - _EPS]; a bound closer to 0 or 1 than this is reported as 0 or 1.
_EPS = 1e-12


@dataclass(frozen=True)
class Decision:
    """Where the test stands after n scored items.

    lower is the always-valid lower bound at level alpha (what "pass" compares with p_min), upper the
    always-valid upper bound at level beta (what "fail" compares with p_min + delta).
    """

    status: Status
    n: int
    successes: int
    lower: float
    upper: float
    # log E_n at p_min and at p_min + delta: the evidence behind "pass" and "fail" respectively.
    log_evalue_pass: float
    log_evalue_fail: float
    reason: str

    @property
    def estimate(self) -> float | None:
        return self.successes / self.n if self.n else None


def log_evalue(successes: np.ndarray | int, n: np.ndarray | int, m: float, a: float, b: float) -> np.ndarray:
    """log E_n(m) of the Beta(a, b) mixture (vectorized over successes and n)."""
    k = np.asarray(successes, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    return betaln(a + k, b + nn - k) - betaln(a, b) - k * math.log(m) - (nn - k) * math.log1p(-m)


def decide(successes: np.ndarray, n: np.ndarray, threshold: float, alpha: float, beta: float, delta: float,
           a: float, b: float) -> np.ndarray:
    """Vectorized decision: +1 pass, -1 fail, 0 continue. `SequentialProportionTest` uses this very
    function, so simulations of it are simulations of the test.

    L_n >= p_min  <=>  p_min is outside C_n(alpha) and below k/n  <=>  k > n p_min and E_n(p_min) >= 1/alpha
    (C_n is an interval holding k/n), so no root finding is needed to decide.
    """
    k = np.asarray(successes, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    upper_ref = threshold + delta
    passed = (k > nn * threshold) & (log_evalue(k, nn, threshold, a, b) >= -math.log(alpha))
    failed = (k < nn * upper_ref) & (log_evalue(k, nn, upper_ref, a, b) >= -math.log(beta))
    # A pass wins a tie: L_n >= p_min proves the minimum at level alpha even inside the indifference zone.
    return np.where(passed, 1, np.where(failed, -1, 0))


def confidence_bounds(successes: int, n: int, level: float, a: float, b: float) -> tuple[float, float]:
    """[L_n, U_n] of C_n(level) = {m : E_n(m) < 1/level}; (0, 1) before any data."""
    if n == 0:
        return 0.0, 1.0
    k = successes
    log_mix = float(betaln(a + k, b + n - k) - betaln(a, b))
    # E_n(m) < 1/level  <=>  log-likelihood(m) > log_mix + log(level); h > 0 inside the interval.
    cut = log_mix + math.log(level)

    def h(m: float) -> float:
        return (k * math.log(m) if k else 0.0) + ((n - k) * math.log1p(-m) if n - k else 0.0) - cut

    mle = k / n
    lo_end, hi_end = max(mle, _EPS), min(mle, 1 - _EPS)
    # h(k/n) >= -log(level) > 0 always (the mixture likelihood never exceeds the maximum), so each
    # side has one sign change at most: the log-likelihood is concave.
    lower = 0.0 if h(_EPS) > 0 else brentq(h, _EPS, lo_end, xtol=1e-14)
    upper = 1.0 if h(1 - _EPS) > 0 else brentq(h, hi_end, 1 - _EPS, xtol=1e-14)
    return float(lower), float(upper)


@dataclass
class SequentialProportionTest:
    """Accumulates rounds of binary scores and decides pass / fail / continue after each.

    `update(successes, n)` takes one round: n newly scored items of which `successes` were correct
    (increments, not running totals). beta defaults to alpha; delta (indifference zone above p_min for
    failing) defaults to 0. After a pass or fail the verdict is final and further updates are refused.
    """

    threshold: float
    alpha: float
    beta: float | None = None
    delta: float | None = None
    prior_weight: float = DEFAULT_PRIOR_WEIGHT
    successes: int = field(default=0, init=False)
    n: int = field(default=0, init=False)
    history: list[Decision] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.beta is None:
            self.beta = self.alpha
        if self.delta is None:
            self.delta = 0.0
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be within (0, 1), got {self.threshold}")
        for name, level in (("alpha", self.alpha), ("beta", self.beta)):
            if not 0 < level < 1:
                raise ValueError(f"{name} must be within (0, 1), got {level}")
        if not 0 <= self.delta < 1 - self.threshold:
            raise ValueError(f"delta must be within [0, 1 - threshold), got {self.delta}")
        if self.prior_weight <= 0:
            raise ValueError(f"prior_weight must be > 0, got {self.prior_weight}")

    @property
    def prior(self) -> tuple[float, float]:
        return self.prior_weight * self.threshold, self.prior_weight * (1 - self.threshold)

    @property
    def decision(self) -> Decision | None:
        return self.history[-1] if self.history else None

    def update(self, successes: int, n: int) -> Decision:
        last = self.decision
        if last is not None and last.status != "continue":
            raise RuntimeError(f"the test already stopped ({last.status}); start a new one")
        if n < 0 or not 0 <= successes <= n:
            raise ValueError(f"a round needs 0 <= successes <= n, got {successes} of {n}")
        self.successes += int(successes)
        self.n += int(n)
        decision = self._evaluate()
        self.history.append(decision)
        return decision

    def run_rounds(self, scores: Iterable[float | bool], round_size: int, max_items: int) -> Decision:
        """Consume `scores` (0/1, lazily: only as many as needed) in rounds of `round_size`, at most
        `max_items`; return the final decision. Ending without a verdict (budget spent or scores
        exhausted) is a fail, since the minimum was not shown to be met."""
        if round_size < 1 or max_items < 1:
            raise ValueError(f"round_size and max_items must be >= 1, got {round_size} and {max_items}")
        it: Iterator[float | bool] = iter(scores)
        decision = self.decision or self._evaluate()
        while decision.status == "continue" and self.n < max_items:
            chunk = list(islice(it, min(round_size, max_items - self.n)))
            if not chunk:
                break
            bad = [s for s in chunk if s not in (0, 1)]
            if bad:
                raise ValueError(f"scores must be 0 or 1 for this test, got {bad[0]!r}")
            decision = self.update(int(sum(chunk)), len(chunk))
        if decision.status != "continue":
            return decision
        return self.finish("max_items reached" if self.n >= max_items else "no more items")

    def finish(self, why: str = "max_items reached") -> Decision:
        """End without a verdict: a fail, since the minimum was not shown to be met."""
        decision = self.decision or self._evaluate()
        if decision.status != "continue":
            return decision
        final = Decision(
            status="fail", n=decision.n, successes=decision.successes, lower=decision.lower,
            upper=decision.upper, log_evalue_pass=decision.log_evalue_pass,
            log_evalue_fail=decision.log_evalue_fail,
            reason=(f"stopped at n={self.n} ({why}) without a verdict: the always-valid lower bound "
                    f"{decision.lower:.3f} is below the minimum {self.threshold:g}, so the minimum is not shown to "
                    f"be met (interval [{decision.lower:.3f}, {decision.upper:.3f}], {self._levels()})"),
        )
        self.history.append(final)
        return final

    # -- internals ----------------------------------------------------------------------------
    def _levels(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:g}" + (f", delta={self.delta:g}" if self.delta else "")

    def _evaluate(self) -> Decision:
        assert self.beta is not None and self.delta is not None  # set in __post_init__
        a, b = self.prior
        k, n = self.successes, self.n
        code = int(decide(np.array(k), np.array(n), self.threshold, self.alpha, self.beta, self.delta, a, b))
        lower = confidence_bounds(k, n, self.alpha, a, b)[0]
        upper = confidence_bounds(k, n, self.beta, a, b)[1]
        e_pass = float(log_evalue(k, n, self.threshold, a, b))
        e_fail = float(log_evalue(k, n, self.threshold + self.delta, a, b))
        observed = f"{k}/{n} = {k / n:.3f}" if n else "no items"
        if code == 1:
            status: Status = "pass"
            reason = (f"stopped at n={n} because the always-valid lower bound {lower:.3f} >= minimum "
                      f"{self.threshold:g} ({observed} correct; e-value {_evalue_text(e_pass)} >= 1/alpha = "
                      f"{1 / self.alpha:g})")
        elif code == -1:
            status = "fail"
            ref = self.threshold + self.delta
            reason = (f"stopped at n={n} because the always-valid upper bound {upper:.3f} < {ref:g} "
                      f"(minimum {self.threshold:g}" + (f" + indifference {self.delta:g}" if self.delta else "")
                      + f"; {observed} correct; e-value {_evalue_text(e_fail)} >= 1/beta = {1 / self.beta:g})")
        else:
            status = "continue"
            reason = (f"n={n}: {observed} correct; always-valid interval [{lower:.3f}, {upper:.3f}] "
                      f"still straddles the minimum {self.threshold:g} ({self._levels()}); continue")
        return Decision(status=status, n=n, successes=k, lower=lower, upper=upper,
                        log_evalue_pass=e_pass, log_evalue_fail=e_fail, reason=reason)


def _evalue_text(log_e: float) -> str:
    # exp() overflows past ~709; a huge e-value is as clear written as a power of e.
    return f"{math.exp(log_e):.3g}" if log_e < 700 else f"e^{log_e:.0f}"


@dataclass(frozen=True)
class SimulationSummary:
    p_true: float
    runs: int
    pass_rate: float
    fail_rate: float
    # Runs that reached max_items with no verdict (counted as fails by run_rounds).
    undecided_rate: float
    mean_items: float
    median_items: float
    p90_items: float


def simulate(p_true: float, threshold: float, alpha: float, *, beta: float | None = None, delta: float = 0.0,
             round_size: int, max_items: int, runs: int, seed: int,
             prior_weight: float = DEFAULT_PRIOR_WEIGHT) -> SimulationSummary:
    """Monte Carlo of the test on i.i.d. Bernoulli(p_true) scores, vectorized over runs with `decide`."""
    beta = alpha if beta is None else beta
    rng = np.random.default_rng(seed)
    ends = np.arange(round_size, max_items + round_size, round_size).clip(max=max_items)
    ends = np.unique(ends)
    scores = rng.random((runs, max_items)) < p_true
    totals = np.cumsum(scores, axis=1)[:, ends - 1]  # successes at the end of each round
    a, b = prior_weight * threshold, prior_weight * (1 - threshold)
    codes = decide(totals, np.broadcast_to(ends, totals.shape), threshold, alpha, beta, delta, a, b)
    stopped = codes != 0
    first = np.where(stopped.any(axis=1), stopped.argmax(axis=1), len(ends) - 1)
    verdict = codes[np.arange(runs), first]
    items = ends[first]
    return SimulationSummary(
        p_true=p_true, runs=runs,
        pass_rate=float(np.mean(verdict == 1)), fail_rate=float(np.mean(verdict == -1)),
        undecided_rate=float(np.mean(verdict == 0)),
        mean_items=float(items.mean()), median_items=float(np.median(items)),
        p90_items=float(np.quantile(items, 0.9)),
    )
