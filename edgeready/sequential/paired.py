"""Paired non-inferiority: did the candidate lose more than a margin against its baseline on the same items?

Both models answer the same items, so each item gives a loss L_i in [-1, 1]: baseline score minus candidate
score when higher is better (accuracy: 1 correct, 0 not), candidate minus baseline when lower is better (a
hallucination rate). The question is whether the mean loss is below the margin m. With Y_i = (1 + L_i) / 2 in
[0, 1] that is "is the mean of Y below (1 + m) / 2?", the question `betting.BettingMeanTest` answers with an
always-valid e-process (Waudby-Smith & Ramdas 2023), whatever the distribution of the pairs:

- sup over pairs whose mean loss is >= m of P(the test ever passes) <= alpha (Ville's inequality);
- sup over pairs whose mean loss is <= a m of P(the test ever fails) <= beta, with a = `power_at` in [0, 1):
  by default (a = 0, the usual non-inferiority design, powered at no difference) a candidate that loses
  nothing is failed with probability at most beta; the indifference zone is (a m, m) in loss, (1 - a) m / 2
  in Y. A larger a promises more (a candidate losing up to a m passes) and costs items: the test must then
  tell m from a m, so it needs about 1 / (1 - a)^2 times the items at the margin (4x at a = 1/2).

It is exact for any number of looks, so the same test serves a fixed-n gate (one look at the end) and a
sequential one (a look after every round). Quantized rungs of one model agree on most items: a concordant pair
has Y = 1/2 exactly, below the threshold, so it is evidence of non-inferiority at low variance, and the
betting grows quickly; that is why the paired gate needs far fewer items than two independent intervals.

For reading, beside the decision: the discordant counts, McNemar's exact test of "any change" (a two-sided
binomial test on the discordant pairs), and Newcombe's hybrid score interval for a difference of paired
proportions (Newcombe 1998, Statist. Med. 17:2635, method 10). That interval is approximate: its one-sided
error at the margin reached 9 % for a nominal 5 % in our simulations when one discordant cell is nearly
empty, which is why it does not decide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgeready.sequential.betting import BettingMeanTest
from edgeready.stats import wilson


def paired_test(margin: float, alpha: float, beta: float, power_at: float = 0.0) -> BettingMeanTest:
    """The non-inferiority test of a mean loss below `margin`, beta controlled at a loss of
    `power_at` * margin (see the module docstring)."""
    if not 0 < margin < 1:
        raise ValueError(f"margin must be within (0, 1), got {margin}")
    if not 0 <= power_at < 1:
        raise ValueError(f"power_at must be within [0, 1), got {power_at}")
    return BettingMeanTest(threshold=(1 + margin) / 2, alpha=alpha, beta=beta, delta=(1 - power_at) * margin / 2)


def concordant_items_to_pass(margin: float, alpha: float, beta: float, most: int = 100_000) -> int | None:
    """The fewest pairs that pass when no item differs (every Y = 1/2): a plan with fewer items can never show
    non-inferiority, however close the models are. None when more than `most` would be needed."""
    import numpy as np

    from edgeready.sequential.base import boundary
    from edgeready.sequential.betting import log_capital

    test = paired_test(margin, alpha, beta)
    n = 1
    while n <= most:
        if log_capital(np.full(n, 0.5), test.threshold, +1)[0] >= boundary(alpha):
            lo = n // 2 + 1
            return next(k for k in range(lo, n + 1) if log_capital(np.full(k, 0.5), test.threshold, +1)[0]
                        >= boundary(alpha))
        n *= 2
    return None


def check_plan(margin: float, alpha: float, beta: float, cap: int, lost: str, within: str) -> None:
    """Raise ValueError when `cap` items cannot show a loss below `margin` even if no item differs, naming
    what is lost (`lost`) and the items (`within`, e.g. "in 40 items ... no answer differs")."""
    need = concordant_items_to_pass(margin, alpha, beta)
    if need is None or need > cap:
        raise ValueError(f"{lost} below {margin:g} cannot be shown {within} (that takes {need or 'over 100,000'}): "
                         "raise sample_size (or max_items when sequential), or widen the margin")


def losses(candidate: Sequence[float], baseline: Sequence[float], higher_is_better: bool) -> list[float]:
    """Y_i = (1 + L_i) / 2 for each pair of scores in [0, 1] (L_i: how much worse the candidate did)."""
    if len(candidate) != len(baseline):
        raise ValueError(f"{len(candidate)} candidate scores for {len(baseline)} baseline scores")
    sign = 1.0 if higher_is_better else -1.0
    return [(1 + sign * (b - c)) / 2 for c, b in zip(candidate, baseline, strict=True)]


def difference_bounds(test: BettingMeanTest) -> tuple[float, float]:
    """The always-valid interval of the mean loss, from the test's interval of the mean of Y."""
    low_y, high_y = test.interval()
    return 2 * low_y - 1, 2 * high_y - 1


def mcnemar_exact(baseline_only: int, candidate_only: int) -> float:
    """Two-sided exact p-value of "no change" from the discordant counts (1.0 when there are none)."""
    n = baseline_only + candidate_only
    if n == 0:
        return 1.0
    from scipy.stats import binomtest  # here: configuration errors must not pay for scipy.stats

    return float(binomtest(candidate_only, n, 0.5).pvalue)


def newcombe_paired(both: int, candidate_only: int, baseline_only: int, neither: int,
                    confidence: float) -> tuple[float, float]:
    """Newcombe's method 10 interval for p_candidate - p_baseline of paired binary scores (for reading)."""
    n = both + candidate_only + baseline_only + neither
    if n == 0:
        raise ValueError("no pairs")
    p1, p2 = (both + candidate_only) / n, (both + baseline_only) / n
    w1, w2 = wilson(both + candidate_only, n, confidence), wilson(both + baseline_only, n, confidence)
    den = math.sqrt((both + candidate_only) * (baseline_only + neither) * (both + baseline_only)
                    * (candidate_only + neither))
    phi = (both * neither - candidate_only * baseline_only) / den if den > 0 else 0.0
    d1, d2 = p1 - w1.low, w2.high - p2
    e1, e2 = w1.high - p1, p2 - w2.low
    low = (p1 - p2) - math.sqrt(max(0.0, d1 * d1 - 2 * phi * d1 * d2 + d2 * d2))
    high = (p1 - p2) + math.sqrt(max(0.0, e1 * e1 - 2 * phi * e1 * e2 + e2 * e2))
    return max(-1.0, low), min(1.0, high)
