"""Wald's sequential probability ratio test of "is the accuracy p at least p_min?", with an indifference zone.

Hypotheses: p0 = p_min (not good enough) against p1 = p_min + delta (good by the margin the target asks
for). After k correct answers out of n the log-likelihood ratio of p1 against p0 is

    S_n = k log(p1 / p0) + (n - k) log((1 - p1) / (1 - p0)),

and after every round the test passes when S_n >= log(1/alpha), fails when S_n <= -log(1/beta), and
continues otherwise (Wald 1945, "Sequential tests of statistical hypotheses", Ann. Math. Statist.
16(2):117-186).

Guarantees (exact, finite-sample, for any round sizes and any number of looks):
- exp(S_n) is a nonnegative supermartingale with mean <= 1 under every p <= p0: one item multiplies it by
  p p1/p0 + (1 - p)(1 - p1)/(1 - p0) on average, which is increasing in p and 1 at p0. By Ville's
  inequality (1939) sup_{p <= p_min} P_p(the test ever passes) <= alpha.
- exp(-S_n) is one under every p >= p1, so sup_{p >= p_min + delta} P_p(the test ever fails) <= beta.
The boundaries are Ville's 1/alpha and 1/beta rather than Wald's approximate (1 - beta)/alpha and
beta/(1 - alpha), so both bounds hold exactly, not only approximately (e-values: Ramdas, Grunwald, Vovk &
Shafer 2023, "Game-theoretic statistics and safe anytime-valid inference", Statist. Sci. 38(4):576-601).
Stopping at the item budget without a verdict is a fail ("not shown"), which lowers the false-pass rate
further and is paid for in the false-fail rate: `operating_characteristics` computes what the cap costs.

Why this test: among all tests, sequential or fixed, whose error rates at p0 and p1 are at most those of
the SPRT, none has a smaller expected number of items at p0 or at p1 (Wald & Wolfowitz 1948, "Optimum
character of the sequential probability ratio test", Ann. Math. Statist. 19(3):326-339). It is the test
chess-engine projects run to accept a patch (Stockfish's fishtest: SPRT with elo0/elo1 bounds). The price
is the indifference zone: inside (p0, p1) neither error is controlled and the test takes longest.

Assumption: each score, given the earlier ones, is Bernoulli(p): items come in an order fixed before
scoring (the stratified sampler interleaves strata so every prefix keeps the mix).

`operating_characteristics` gives the exact pass/fail probabilities and expected items of any rule that
decides from (successes, n) at round ends, by dynamic programming over the binomial lattice; and
`fixed_n_design` the smallest fixed sample with the same error rates, so "items used vs fixed-n" is
computed, not guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from edgeready.sequential.base import BinaryTest, Decision, Status, boundary, evalue_text
from edgeready.sequential.mixture import DEFAULT_PRIOR_WEIGHT, confidence_bounds


def llr_steps(p0: float, p1: float) -> tuple[float, float]:
    """Log-likelihood-ratio increments of a correct and of a wrong answer (p1 against p0)."""
    return math.log(p1 / p0), math.log1p(-p1) - math.log1p(-p0)


def sprt_decide(successes: np.ndarray, n: np.ndarray, threshold: float, delta: float, alpha: float,
                beta: float) -> np.ndarray:
    """Vectorized decision: +1 pass, -1 fail, 0 continue. The class computes S_n with the same float
    operations (`BernoulliSPRT.log_lr`) against the same boundaries, and tests/test_sprt.py checks that both
    stop alike, so the exact operating characteristics below are those of the test the gate runs."""
    up, down = llr_steps(threshold, threshold + delta)
    k = np.asarray(successes, dtype=np.float64)
    s = k * up + (np.asarray(n, dtype=np.float64) - k) * down
    return np.where(s >= boundary(alpha), 1, np.where(s <= -boundary(beta), -1, 0))


@dataclass
class BernoulliSPRT(BinaryTest):
    """The SPRT on binary scores (see the module docstring). delta defaults to 0.05.

    The decision's interval is the beta-binomial mixture confidence sequence (edgeready.sequential.mixture)
    at levels alpha (lower) and beta (upper): an always-valid statement about p to read beside the verdict.
    """

    name = "SPRT (Wald, Ville boundaries)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.delta is None:
            self.delta = 0.05
        if not 0 < self.delta < 1 - self.threshold:
            raise ValueError(f"an SPRT needs delta within (0, 1 - threshold), got {self.delta}")

    def reachable(self, max_items: int) -> bool:
        """Whether max_items correct answers in a row would pass: otherwise no run can."""
        return bool(self._code(max_items, max_items) == 1)

    def rule(self) -> Callable[[np.ndarray, int], np.ndarray]:
        """The decision as a vectorized (successes, n) -> codes rule, for `operating_characteristics`."""
        assert self.beta is not None and self.delta is not None
        return sprt_rule(self.threshold, self.delta, self.alpha, self.beta)

    def log_lr(self, successes: int, n: int) -> float:
        """S_n, computed as `sprt_decide` computes it (the same float operations in the same order)."""
        assert self.delta is not None
        up, down = llr_steps(self.threshold, self.threshold + self.delta)
        return float(np.float64(successes) * up + (np.float64(n) - np.float64(successes)) * down)

    def _code(self, k: int, n: int) -> int:
        assert self.beta is not None and self.delta is not None
        s = self.log_lr(k, n)
        return 1 if s >= boundary(self.alpha) else -1 if s <= -boundary(self.beta) else 0

    def _not_shown(self, decision: Decision) -> str:
        return (f"the likelihood ratio {evalue_text(decision.log_evalue_pass)} of accuracy "
                f"{self.threshold + (self.delta or 0):g} against {self.threshold:g} is below 1/alpha = "
                f"{1 / self.alpha:g}, so the minimum is not shown to be met")

    def _evaluate(self) -> Decision:
        assert self.beta is not None and self.delta is not None
        k, n = self.successes, self.n
        s = self.log_lr(k, n)
        w = DEFAULT_PRIOR_WEIGHT
        lower = confidence_bounds(k, n, self.alpha, w * self.threshold, w * (1 - self.threshold))[0]
        upper = confidence_bounds(k, n, self.beta, w * self.threshold, w * (1 - self.threshold))[1]
        p1 = self.threshold + self.delta
        observed = f"{k}/{n} = {k / n:.3f}" if n else "no items"
        code = self._code(k, n)
        if code == 1:
            status: Status = "pass"
            reason = (f"stopped at n={n} because the likelihood ratio of accuracy {p1:g} against the minimum "
                      f"{self.threshold:g} is {evalue_text(s)} >= 1/alpha = {1 / self.alpha:g} ({observed} correct)")
        elif code == -1:
            status = "fail"
            reason = (f"stopped at n={n} because the likelihood ratio of the minimum {self.threshold:g} against "
                      f"{p1:g} (minimum + indifference {self.delta:g}) is {evalue_text(-s)} >= 1/beta = "
                      f"{1 / self.beta:g} ({observed} correct)")
        else:
            status = "continue"
            reason = (f"n={n}: {observed} correct; likelihood ratio {evalue_text(s)} between "
                      f"{self.beta:g} and {1 / self.alpha:g} ({self.levels()}); continue")
        return Decision(status=status, n=n, estimate=k / n if n else None, lower=lower, upper=upper,
                        log_evalue_pass=s, log_evalue_fail=-s, reason=reason, successes=k)


# -- exact operating characteristics -------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    """Exact behaviour of a test at one true accuracy p."""

    p: float
    pass_prob: float
    fail_prob: float  # decided "fail" before the cap
    undecided_prob: float  # reached the cap without a verdict (the gate reports a fail)
    mean_items: float

    @property
    def reject_prob(self) -> float:
        """Probability that the gate does not pass (a decided fail or the cap)."""
        return self.fail_prob + self.undecided_prob


# The walk over the lattice ends once the undecided mass is below this: whatever it does later moves a pass or
# fail probability by at most this much. It is reported as undecided (the gate's "not shown") at the cap.
NEGLIGIBLE_MASS = 1e-12
# Mass dropped per trim from each end of the lattice: counts of correct answers that far from n p have
# probability below this, and keeping them would make a look cost O(n) instead of O(sqrt(n)). What is dropped
# is counted as undecided, so pass + fail + undecided stays 1 and no pass probability is ever overstated.
_TAIL_MASS = 1e-20
# Looks between trims: a trim costs more than a look, and cells past either end only widen the lattice by
# round_size a look until the next one (stopped cells hold exact zeros and cost nothing but their width).
_TRIM_EVERY = 16
# Steps up to this size take binomial coefficients exactly (math.comb fits a float to n = 1029).
_EXACT_PMF = 1000


@dataclass
class _Lattice:
    """The walk's state: P(lo + i correct after n items and still running), i = 0..len(alive) - 1, and what
    stopped before. Only the cells that hold mass are kept: an SPRT's undecided band has a fixed width in k,
    so each round costs O(band + round_size), not O(n) (the O(n^2) walk took minutes at 10^6 items)."""

    p: float
    rule: Callable[[np.ndarray, int], np.ndarray]
    alive: np.ndarray
    lo: int = 0
    n: int = 0
    passed: float = 0.0
    failed: float = 0.0
    items: float = 0.0  # sum over the looks so far of n x P(stopped there)
    dropped: float = 0.0  # tail mass left out (see _TAIL_MASS)
    looks: int = 0

    def look(self, pmf: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The lattice len(pmf) - 1 items on, stopped cells zeroed, and P(pass), P(fail) at that look."""
        alive = np.convolve(self.alive, pmf)
        codes = self.rule(np.arange(self.lo, self.lo + alive.size), self.n + pmf.size - 1)
        p_fail, _, p_pass = np.bincount(codes + 1, weights=alive, minlength=3)
        return alive * (codes == 0), float(p_pass), float(p_fail)

    def advance(self, pmf: np.ndarray) -> None:
        alive, p_pass, p_fail = self.look(pmf)
        self.n += pmf.size - 1
        self.passed, self.failed = self.passed + p_pass, self.failed + p_fail
        self.items += self.n * (p_pass + p_fail)
        self.alive, self.looks = alive, self.looks + 1
        if self.looks % _TRIM_EVERY == 0:
            self.alive, head, lost = _trim(alive)
            self.lo += head
            self.dropped += lost

    def at_cap(self, cap: int, pmf: np.ndarray | None) -> OperatingPoint:
        """The test with budget `cap`: its last look `len(pmf) - 1` items on (None: the walk ended, nothing
        undecided is left but the negligible rest)."""
        rest, p_pass, p_fail = (self.alive, 0.0, 0.0) if pmf is None else self.look(pmf)
        undecided = float(rest.sum()) + self.dropped
        return OperatingPoint(p=self.p, pass_prob=self.passed + p_pass, fail_prob=self.failed + p_fail,
                              undecided_prob=undecided, mean_items=self.items + cap * (p_pass + p_fail + undecided))


def _trim(alive: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Drop the cells at either end holding at most _TAIL_MASS together (the stopped ones hold 0): the kept
    slice, how many cells were dropped at the low end, and the mass dropped."""
    total = float(alive.sum())
    if total <= 2 * _TAIL_MASS:  # (almost) nothing left: the walk ends on NEGLIGIBLE_MASS anyway
        return alive, 0, 0.0
    low = np.cumsum(alive)
    high = np.cumsum(alive[::-1])
    head = int(np.searchsorted(low, _TAIL_MASS, side="right"))
    tail = int(np.searchsorted(high, _TAIL_MASS, side="right"))
    lost = (float(low[head - 1]) if head else 0.0) + (float(high[tail - 1]) if tail else 0.0)
    return alive[head : alive.size - tail], head, lost


def _walk(p: float, rule: Callable[[np.ndarray, int], np.ndarray], round_size: int,
          caps: list[int]) -> Iterator[tuple[int, OperatingPoint]]:
    """The operating point at each budget of `caps` (ascending), from one walk over the lattice: the looks are
    the same for every budget up to its last, which comes early when a budget is not a multiple of round_size."""
    if round_size < 1 or not caps or caps[0] < 1:
        raise ValueError(f"round_size and max_items must be >= 1, got {round_size} and {caps[:1]}")
    lat = _Lattice(p, rule, np.ones(1))
    pmfs: dict[int, np.ndarray] = {}

    def pmf(step: int) -> np.ndarray:
        return pmfs[step] if step in pmfs else pmfs.setdefault(step, _binomial_pmf(step, p))

    todo = list(caps)
    while todo:
        if float(lat.alive.sum()) < NEGLIGIBLE_MASS:  # settled: a larger budget changes nothing that counts
            yield from ((cap, lat.at_cap(cap, None)) for cap in todo)
            return
        while todo and todo[0] <= lat.n + round_size:
            cap = todo.pop(0)
            yield cap, lat.at_cap(cap, pmf(cap - lat.n))
        if todo:
            lat.advance(pmf(round_size))


def operating_characteristics(p: float, rule: Callable[[np.ndarray, int], np.ndarray], round_size: int,
                              max_items: int) -> OperatingPoint:
    """Exact pass/fail probabilities and expected items of `rule(successes, n) -> codes` (+1 pass, -1 fail,
    0 continue), looked at after every `round_size` items up to `max_items`, for i.i.d. Bernoulli(p)
    scores: the distribution of the number correct is carried round to round, less what stopped.

    Exact up to NEGLIGIBLE_MASS (the walk stops when less than that is undecided) and the lattice tails
    (_TAIL_MASS a trim): both are reported as undecided, never as a pass. The rule is called on the counts
    that still hold mass only, so it must decide each (k, n) on its own (vectorized, elementwise)."""
    if round_size < 1 or max_items < 1:
        raise ValueError(f"round_size and max_items must be >= 1, got {round_size} and {max_items}")
    return next(_walk(p, rule, round_size, [max_items]))[1]


def _binomial_pmf(n: int, p: float) -> np.ndarray:
    """P(j correct of n), j = 0..n, in closed form (no scipy: target validation uses this). Past _EXACT_PMF
    the coefficients overflow a float, so they are summed as logarithms."""
    j = np.arange(n + 1)
    if n <= _EXACT_PMF:
        comb = np.array([math.comb(n, int(i)) for i in j], dtype=np.float64)
        return comb * p**j * (1 - p) ** (n - j)
    if not 0 < p < 1:  # a point mass at 0 or n
        return (j == (n if p >= 1 else 0)).astype(np.float64)
    steps = np.log(np.arange(n, 0, -1, dtype=np.float64)) - np.log(np.arange(1, n + 1, dtype=np.float64))
    log_comb = np.concatenate(([0.0], np.cumsum(steps)))
    return np.exp(log_comb + j * math.log(p) + (n - j) * math.log1p(-p))


def sprt_rule(threshold: float, delta: float, alpha: float, beta: float) -> Callable[[np.ndarray, int], np.ndarray]:
    def rule(k: np.ndarray, n: int) -> np.ndarray:
        return sprt_decide(k, n, threshold, delta, alpha, beta)  # n broadcasts: the same float operations

    return rule


@dataclass(frozen=True)
class FixedDesign:
    """The smallest fixed-n test with the same error rates: answer n items, pass when at least `k_min` are
    correct (the one-sided exact binomial test at level alpha, the most powerful fixed-n test)."""

    n: int
    k_min: int
    alpha: float  # realized P(pass | p = p_min), <= the nominal alpha
    power: float  # realized P(pass | p = p_min + delta), >= 1 - beta


def fixed_n_design(threshold: float, delta: float, alpha: float, beta: float, n_max: int = 200_000) -> FixedDesign:
    """Smallest n at which the level-alpha exact binomial test has power >= 1 - beta at threshold + delta."""
    from scipy.stats import binom

    if not 0 < delta < 1 - threshold:
        raise ValueError(f"delta must be within (0, 1 - threshold), got {delta}")
    lo = 1
    while lo <= n_max:
        ns = np.arange(lo, min(2 * lo, n_max) + 1)
        k_min = binom.isf(alpha, ns, threshold).astype(np.int64) + 1  # P(K >= k_min | p_min) <= alpha
        power = binom.sf(k_min - 1, ns, threshold + delta)
        ok = np.flatnonzero(power >= 1 - beta)
        if ok.size:
            i = int(ok[0])
            n, k = int(ns[i]), int(k_min[i])
            return FixedDesign(n=n, k_min=k, alpha=float(binom.sf(k - 1, n, threshold)), power=float(power[i]))
        lo = int(ns[-1]) + 1
    raise ValueError(f"no fixed n <= {n_max} reaches power {1 - beta:g} at {threshold + delta:g}")


# Budgets searched by `budget_for_power` by default: the most items a target may ask for (edgeready.schema,
# SequentialOptions._MAX_ITEMS), since suggesting more would be refused, and each budget tried costs a walk.
MAX_BUDGET = 10_000


def budget_for_power(rule: Callable[[np.ndarray, int], np.ndarray], p1: float, beta: float, round_size: int,
                     start: int, limit: int = MAX_BUDGET) -> int | None:
    """A budget (doubling from `start`) at which a candidate at p1 fails to pass with probability <= beta, the
    budget's own "not shown" stops included; None when none up to `limit` does."""
    caps = []
    cap = max(start, round_size)
    while cap <= limit:
        caps.append(cap)
        cap *= 2
    # One walk serves every budget (their looks coincide up to the last), stopping at the first that suffices.
    return next((c for c, op in _walk(p1, rule, round_size, caps) if op.reject_prob <= beta), None) if caps else None
