"""An always-valid test of "is the mean of scores in [0, 1] at most r?" (lower is better), by betting.

For the hallucination gate: each passage's score (the mean SelfCheck score of its sentences) is in [0, 1],
passages are the independent units, and nothing is known of the scores' distribution, so the test must be
nonparametric. It is the betting construction of Waudby-Smith & Ramdas (2023), "Estimating means of bounded
random variables by betting", J. R. Statist. Soc. B 86(1):1-27.

Two capital processes run side by side, with r = max_rate and r' = max_rate - delta:
- for "pass" (against H0: mean >= r):   K_n = prod_i (1 + l_i (r - X_i)),   0 <= l_i <= c / (1 - r);
- for "fail" (against H1: mean <= r'):  K'_n = prod_i (1 + l'_i (X_i - r')), 0 <= l'_i <= c / r'.
Each bet l_i is chosen before X_i is seen (predictable), so under its null each process is a nonnegative
supermartingale with mean <= 1 (one factor averages 1 + l (r - mean) <= 1). Ville's inequality gives

- sup over distributions with mean >= max_rate of P(the test ever passes) <= alpha (K_n >= 1/alpha),
- sup over distributions with mean <= max_rate - delta of P(the test ever fails) <= beta (K'_n >= 1/beta),

exactly, for any distribution on [0, 1], any round sizes and any number of looks. Stopping at the budget
without a verdict is a fail ("not shown").

The bets are the paper's aGRAPA: l = (r - m) / (v + (r - m)^2), clipped to [0, c / (1 - r)], with m and v
the running mean and variance of the scores seen so far, regularized by one pseudo-observation of mean 1/2
and variance 1/4 (the paper's choice), and c = 3/4. It bets more when the scores sit clearly on one side and
vary little, which is what lets a clear candidate stop early.

The interval reported beside the decision is the set of means m that neither process rejects at its level
(computed on a grid of m): an always-valid statement about the passage-level rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgeready.sequential.base import Decision, SequentialTest, Status, boundary, evalue_text
from edgeready.sequential.mixture import SimulationSummary

TRUNCATION = 0.75  # c: the most a bet may risk, as a share of what it could lose (the paper uses 1/2 or 3/4)
PRIOR_MEAN, PRIOR_VAR, PRIOR_WEIGHT = 0.5, 0.25, 1.0
_GRID = np.linspace(0.0, 1.0, 1001)[1:-1]


def _running_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predictable mean and variance before each observation (the paper's regularized estimates), along the
    last axis of x."""
    n = x.shape[-1]
    t = np.arange(n, dtype=np.float64)  # observations seen before item i
    total = np.cumsum(x, axis=-1)
    before = total - x  # sum of the observations before item i
    mean = (PRIOR_WEIGHT * PRIOR_MEAN + before) / (PRIOR_WEIGHT + t)
    # Squared deviation of each x from the mean estimate that includes it (the paper's sigma-hat update).
    dev = (x - (PRIOR_WEIGHT * PRIOR_MEAN + total) / (PRIOR_WEIGHT + t + 1)) ** 2
    var = (PRIOR_WEIGHT * PRIOR_VAR + np.cumsum(dev, axis=-1) - dev) / (PRIOR_WEIGHT + t)
    return mean, var


def cumulative_log_capital(x: np.ndarray, m: float | np.ndarray, side: int) -> np.ndarray:
    """log K_1..K_n at one m, along the last axis of x (runs x items for a simulation): side=+1 bets that the
    mean is below m (evidence against mean >= m), side=-1 that it is above m (against mean <= m)."""
    x = np.asarray(x, dtype=np.float64)
    mean, var = _running_moments(x)
    gap = side * (m - mean)  # > 0 when the running mean sits on the side being bet on
    # The bet's ceiling keeps every factor positive: 1 - l (1 - m) > 0 (side +1), 1 - l m > 0 (side -1).
    cap = TRUNCATION / ((1 - m) if side > 0 else m)
    lam = np.clip(gap / (var + gap**2), 0.0, cap)
    return np.cumsum(np.log1p(lam * side * (m - x)), axis=-1)


def log_capital(x: np.ndarray, m: np.ndarray | float, side: int) -> np.ndarray:
    """log K_n after all of x (one sequence), for every m given."""
    x = np.asarray(x, dtype=np.float64)
    ms = np.atleast_1d(np.asarray(m, dtype=np.float64))
    if x.size == 0:
        return np.zeros(ms.shape[0])
    # Broadcasting the sequence against the m's: one row per m.
    return cumulative_log_capital(np.broadcast_to(x, (ms.shape[0], x.size)), ms[:, None], side)[:, -1]


def betting_decide(x: np.ndarray, threshold: float, delta: float, alpha: float, beta: float,
                   ends: np.ndarray) -> np.ndarray:
    """+1 pass, -1 fail, 0 continue at each round end (columns) for each run (rows of x). The class decides by
    the same two processes, so a simulation with this is a simulation of the gate's test."""
    up = cumulative_log_capital(x, threshold, +1)[..., ends - 1]
    down = cumulative_log_capital(x, threshold - delta, -1)[..., ends - 1]
    return np.where(up >= boundary(alpha), 1, np.where(down >= boundary(beta), -1, 0))


@dataclass
class BettingMeanTest(SequentialTest):
    """Upper-bound test of a mean in [0, 1] (see the module docstring); threshold = max_rate, delta (default
    0.05) the indifference margin below it within which failing early is not controlled."""

    values: list[float] = field(default_factory=list, init=False)

    name = "betting e-process (Waudby-Smith & Ramdas, aGRAPA)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.delta is None:
            self.delta = 0.05
        if not 0 < self.delta < self.threshold:
            raise ValueError(f"delta must be within (0, threshold), got {self.delta}")

    def reachable(self, max_items: int) -> bool:
        """Whether max_items scores of 0 in a row would pass: otherwise no run can."""
        return bool(log_capital(np.zeros(max_items), self.threshold, +1)[0] >= boundary(self.alpha))

    def _add(self, scores: Sequence[float]) -> None:
        bad = [s for s in scores if not (isinstance(s, int | float) and 0.0 <= s <= 1.0)]
        if bad:
            raise ValueError(f"scores must be numbers within [0, 1] for this test, got {bad[0]!r}")
        self.values += [float(s) for s in scores]

    def _not_shown(self, decision: Decision) -> str:
        return (f"the evidence {evalue_text(decision.log_evalue_pass)} that the mean is below {self.threshold:g} "
                f"is under 1/alpha = {1 / self.alpha:g}, so the rate is not shown to be within the maximum")

    def interval(self) -> tuple[float, float]:
        """Means not rejected by either process: [lower at level beta, upper at level alpha]."""
        assert self.beta is not None
        x = np.asarray(self.values)
        if x.size == 0:
            return 0.0, 1.0
        # The bets depend on m, so rejection need not be monotone in m: keep the outermost means not
        # rejected, and round outwards by one grid step.
        step = float(_GRID[1] - _GRID[0])
        kept_up = log_capital(x, _GRID, +1) < boundary(self.alpha)  # m not shown to exceed the mean
        kept_down = log_capital(x, _GRID, -1) < boundary(self.beta)  # m not shown to be under the mean
        upper = min(1.0, float(_GRID[kept_up].max()) + step) if kept_up.any() else float(_GRID[0])
        lower = max(0.0, float(_GRID[kept_down].min()) - step) if kept_down.any() else float(_GRID[-1])
        return lower, max(upper, lower)

    def _evaluate(self) -> Decision:
        assert self.beta is not None and self.delta is not None
        x = np.asarray(self.values)
        n = len(x)
        e_pass = float(log_capital(x, self.threshold, +1)[0])
        floor = self.threshold - self.delta
        e_fail = float(log_capital(x, floor, -1)[0])
        lower, upper = self.interval()
        mean = float(x.mean()) if n else None
        observed = f"mean {mean:.3f} over {n}" if n else "no items"
        if e_pass >= boundary(self.alpha):
            status: Status = "pass"
            reason = (f"stopped at n={n} because the evidence that the rate is below {self.threshold:g} is "
                      f"{evalue_text(e_pass)} >= 1/alpha = {1 / self.alpha:g} ({observed})")
        elif e_fail >= boundary(self.beta):
            status = "fail"
            reason = (f"stopped at n={n} because the evidence that the rate is above {floor:g} (maximum - "
                      f"indifference {self.delta:g}) is {evalue_text(e_fail)} >= 1/beta = {1 / self.beta:g} "
                      f"({observed})")
        else:
            status = "continue"
            reason = (f"n={n}: {observed}; always-valid interval [{lower:.3f}, {upper:.3f}] still straddles "
                      f"the maximum {self.threshold:g} ({self.levels()}); continue")
        return Decision(status=status, n=n, estimate=mean, lower=lower, upper=upper,
                        log_evalue_pass=e_pass, log_evalue_fail=e_fail, reason=reason)


def simulate(draw: Callable[[np.random.Generator, tuple[int, int]], np.ndarray], threshold: float, alpha: float, *,
             beta: float | None = None, delta: float = 0.05, round_size: int, max_items: int, runs: int,
             seed: int) -> SimulationSummary:
    """Monte Carlo of the test on i.i.d. scores from `draw(rng, (runs, max_items))`, vectorized over runs with
    `betting_decide`; runs that reach max_items undecided count as fails, as in the gate."""
    beta = alpha if beta is None else beta
    rng = np.random.default_rng(seed)
    x = np.asarray(draw(rng, (runs, max_items)), dtype=np.float64)
    if x.shape != (runs, max_items) or x.min() < 0 or x.max() > 1:
        raise ValueError(f"draw must return {runs} x {max_items} values within [0, 1]")
    ends = np.unique(np.arange(round_size, max_items + round_size, round_size).clip(max=max_items))
    codes = betting_decide(x, threshold, delta, alpha, beta, ends)
    stopped = codes != 0
    first = np.where(stopped.any(axis=1), stopped.argmax(axis=1), len(ends) - 1)
    verdict = codes[np.arange(runs), first]
    items = ends[first]
    return SimulationSummary(
        p_true=float(x.mean()), runs=runs,
        pass_rate=float(np.mean(verdict == 1)), fail_rate=float(np.mean(verdict == -1)),
        undecided_rate=float(np.mean(verdict == 0)),
        mean_items=float(items.mean()), median_items=float(np.median(items)),
        p90_items=float(np.quantile(items, 0.9)),
    )
