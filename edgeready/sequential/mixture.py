"""An always-valid confidence sequence for a proportion, and the test of "is p at least p_min?" built on it.

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeready.sequential.base import BinaryTest, Decision, Status, boundary, evalue_text

# Prior pseudo-counts, centred on the threshold: Beta(c * p_min, c * (1 - p_min)). A prior near the
# threshold spends its mass where the decision is hard. Of c in {1, 2, 4, 8, 16, 32}, c = 8 used the
# fewest items on average over p_true - p_min in {+-0.1, +-0.2, +-0.3} at p_min in {0.35, 0.6, 0.8}
# (alpha 0.05, rounds of 10, at most 400 items; docs/SEQUENTIAL.md). Any c > 0 is valid: the prior is
# fixed before data, which is all the martingale argument needs.
DEFAULT_PRIOR_WEIGHT = 8.0

# Roots are found on [_EPS, 1 - _EPS]; a bound closer to 0 or 1 than this is reported as 0 or 1.
_EPS = 1e-12


def log_evalue(successes: np.ndarray | int, n: np.ndarray | int, m: float, a: float, b: float) -> np.ndarray:
    """log E_n(m) of the Beta(a, b) mixture (vectorized over successes and n)."""
    k = np.asarray(successes, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    return _against(_log_mixture(k, nn, a, b), k, nn, m)


def _log_mixture(k: np.ndarray, nn: np.ndarray, a: float, b: float) -> np.ndarray:
    """log of the mixture likelihood B(a + k, b + n - k) / B(a, b): the costly part of log E_n(m), the same
    for every m, so `decide` computes it once for its two references."""
    from scipy.special import betaln  # imported here: validating a target must not pay for scipy

    return betaln(a + k, b + nn - k) - betaln(a, b)


def _against(log_mix: np.ndarray, k: np.ndarray, nn: np.ndarray, m: float) -> np.ndarray:
    return log_mix - k * math.log(m) - (nn - k) * math.log1p(-m)


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
    log_mix = _log_mixture(k, nn, a, b)  # the same float operations as log_evalue, done once
    passed = (k > nn * threshold) & (_against(log_mix, k, nn, threshold) >= boundary(alpha))
    failed = (k < nn * upper_ref) & (_against(log_mix, k, nn, upper_ref) >= boundary(beta))
    # A pass wins a tie: L_n >= p_min proves the minimum at level alpha even inside the indifference zone.
    return np.where(passed, 1, np.where(failed, -1, 0))


def confidence_bounds(successes: int, n: int, level: float, a: float, b: float) -> tuple[float, float]:
    """[L_n, U_n] of C_n(level) = {m : E_n(m) < 1/level}; (0, 1) before any data."""
    if n == 0:
        return 0.0, 1.0
    from scipy.optimize import brentq
    from scipy.special import betaln

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
class SequentialProportionTest(BinaryTest):
    """The mixture test on binary scores. `update(successes, n)` takes one round as counts (increments,
    not running totals); `observe(scores)` takes it as 0/1 scores. beta defaults to alpha, delta (the
    indifference zone above p_min for failing) to 0."""

    prior_weight: float = DEFAULT_PRIOR_WEIGHT
    name = "beta-binomial mixture confidence sequence"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.delta is None:
            self.delta = 0.0
        if not 0 <= self.delta < 1 - self.threshold:
            raise ValueError(f"delta must be within [0, 1 - threshold), got {self.delta}")
        if self.prior_weight <= 0:
            raise ValueError(f"prior_weight must be > 0, got {self.prior_weight}")

    @property
    def prior(self) -> tuple[float, float]:
        return self.prior_weight * self.threshold, self.prior_weight * (1 - self.threshold)

    def reachable(self, max_items: int) -> bool:
        """Whether max_items correct answers in a row would pass: otherwise no run can."""
        a, b = self.prior
        return bool(decide(np.array(max_items), np.array(max_items), self.threshold, self.alpha,
                           self.beta or self.alpha, self.delta or 0.0, a, b) == 1)

    def rule(self) -> Callable[[np.ndarray, int], np.ndarray]:
        """The decision as a vectorized (successes, n) -> codes rule, for exact operating characteristics."""
        a, b = self.prior
        thr, alpha, beta, delta = self.threshold, self.alpha, self.beta or self.alpha, self.delta or 0.0

        def rule(k: np.ndarray, n: int) -> np.ndarray:
            return decide(k, n, thr, alpha, beta, delta, a, b)  # n broadcasts: the same float operations

        return rule

    # -- internals ----------------------------------------------------------------------------
    def _not_shown(self, decision: Decision) -> str:
        return (f"the always-valid lower bound {decision.lower:.3f} is below the minimum {self.threshold:g}, so "
                f"the minimum is not shown to be met (interval [{decision.lower:.3f}, {decision.upper:.3f}])")

    def _evaluate(self) -> Decision:
        assert self.beta is not None and self.delta is not None  # set in __post_init__
        a, b = self.prior
        k, n = self.successes, self.n
        code = int(decide(np.array(k), np.array(n), self.threshold, self.alpha, self.beta, self.delta, a, b))
        lower = confidence_bounds(k, n, self.alpha, a, b)[0]
        upper = confidence_bounds(k, n, self.beta, a, b)[1]
        # One-sided: evidence that p is BELOW p_min says nothing for a pass (and vice versa), so it is
        # reported as an e-value of 1; then pass <=> log_evalue_pass >= boundary(alpha), exactly as `decide`.
        e_pass = float(log_evalue(k, n, self.threshold, a, b)) if k > n * self.threshold else 0.0
        ref = self.threshold + self.delta
        e_fail = float(log_evalue(k, n, ref, a, b)) if k < n * ref else 0.0
        observed = f"{k}/{n} = {k / n:.3f}" if n else "no items"
        if code == 1:
            status: Status = "pass"
            reason = (f"stopped at n={n} because the always-valid lower bound {lower:.3f} >= minimum "
                      f"{self.threshold:g} ({observed} correct; e-value {evalue_text(e_pass)} >= 1/alpha = "
                      f"{1 / self.alpha:g})")
        elif code == -1:
            status = "fail"
            ref = self.threshold + self.delta
            reason = (f"stopped at n={n} because the always-valid upper bound {upper:.3f} < {ref:g} "
                      f"(minimum {self.threshold:g}" + (f" + indifference {self.delta:g}" if self.delta else "")
                      + f"; {observed} correct; e-value {evalue_text(e_fail)} >= 1/beta = {1 / self.beta:g})")
        else:
            status = "continue"
            reason = (f"n={n}: {observed} correct; always-valid interval [{lower:.3f}, {upper:.3f}] "
                      f"still straddles the minimum {self.threshold:g} ({self.levels()}); continue")
        return Decision(status=status, n=n, estimate=k / n if n else None, lower=lower, upper=upper,
                        log_evalue_pass=e_pass, log_evalue_fail=e_fail, reason=reason, successes=k)


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
