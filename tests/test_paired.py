"""The paired non-inferiority test and its companions (edgeready/sequential/paired.py), on simulated pairs.

The guarantees are the betting test's (Ville's inequality), checked here for the paired use: a candidate
that loses exactly the margin passes at most alpha of the time, one that loses at most power_at x the margin
fails at most beta of the time, for any mix of concordant and discordant pairs, any round size and any budget.
Each property is checked by Monte Carlo with a tolerance of three standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeready.sequential.base import AllOf, run_in_rounds
from edgeready.sequential.betting import simulate
from edgeready.sequential.paired import (
    concordant_items_to_pass,
    difference_bounds,
    losses,
    mcnemar_exact,
    newcombe_paired,
    paired_test,
)
from edgeready.sequential.sprt import BernoulliSPRT

ALPHA = BETA = 0.05
RUNS = 2000


def _draw(loss: float, discordance: float):
    """Pairs whose mean loss is `loss`: a share `discordance` of items differ (regressions and improvements
    in the mix that gives that loss), the rest agree (Y = 1/2)."""
    regress = (discordance + loss) / 2
    improve = (discordance - loss) / 2
    assert regress >= 0 and improve >= 0

    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        u = rng.random(shape)
        return np.where(u < regress, 1.0, np.where(u < regress + improve, 0.0, 0.5))
    return draw


def _tolerance(p: float) -> float:
    return 3 * math.sqrt(p * (1 - p) / RUNS)


@settings(max_examples=12, deadline=None)
@given(margin=st.sampled_from([0.03, 0.05, 0.1]), extra=st.floats(0.0, 0.4), round_size=st.sampled_from([1, 10, 25]),
       budget=st.sampled_from([100, 400]), seed=st.integers(0, 10_000))
def test_a_candidate_losing_the_margin_passes_at_most_alpha(margin, extra, round_size, budget, seed):
    test = paired_test(margin, ALPHA, BETA)
    res = simulate(_draw(margin, margin + extra), test.threshold, ALPHA, beta=BETA, delta=test.delta,
                   round_size=round_size, max_items=budget, runs=RUNS, seed=seed)
    assert res.pass_rate <= ALPHA + _tolerance(ALPHA)


@settings(max_examples=12, deadline=None)
@given(margin=st.sampled_from([0.03, 0.05, 0.1]), power_at=st.sampled_from([0.0, 0.5]), share=st.floats(0.0, 1.0),
       extra=st.floats(0.0, 0.4), round_size=st.sampled_from([1, 10, 25]), seed=st.integers(0, 10_000))
def test_a_candidate_losing_at_most_power_at_of_the_margin_is_failed_early_at_most_beta(margin, power_at, share,
                                                                                         extra, round_size, seed):
    loss = share * power_at * margin  # anywhere in [0, power_at * margin]
    test = paired_test(margin, ALPHA, BETA, power_at)
    res = simulate(_draw(loss, loss + extra), test.threshold, ALPHA, beta=BETA, delta=test.delta,
                   round_size=round_size, max_items=2000, runs=RUNS, seed=seed)
    # Failing at the fail boundary is what beta bounds; running out of budget is "not shown" (a fail by rule).
    assert res.fail_rate <= BETA + _tolerance(BETA)


def test_powering_at_no_loss_fails_a_candidate_at_the_margin_sooner_than_powering_at_half_of_it():
    """The design choice in numbers: the indifference zone (a m, m) is 1 - a of the margin wide, so failing a
    candidate that loses the whole margin takes about 1 / (1 - a)^2 times the pairs."""
    at = {}
    for power_at in (0.0, 0.5):
        test = paired_test(0.05, ALPHA, BETA, power_at)
        res = simulate(_draw(0.05, 0.1), test.threshold, ALPHA, beta=BETA, delta=test.delta, round_size=10,
                       max_items=20_000, runs=400, seed=1)
        at[power_at] = res.mean_items
        assert res.pass_rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 400)
    assert 2.0 < at[0.5] / at[0.0] < 6.0
    with pytest.raises(ValueError, match="power_at"):
        paired_test(0.05, ALPHA, BETA, 1.0)


@settings(max_examples=10, deadline=None)
@given(loss=st.floats(-0.2, 0.3), extra=st.floats(0.0, 0.3), n=st.integers(20, 300), seed=st.integers(0, 10_000))
def test_the_always_valid_loss_interval_covers_the_true_loss(loss, extra, n, seed):
    discordance = abs(loss) + extra
    rng = np.random.default_rng(seed)
    draw = _draw(loss, discordance)
    covered = 0
    runs = 300
    for row in draw(rng, (runs, n)):
        test = paired_test(0.05, ALPHA, BETA)
        test.observe(row.tolist())
        low, high = difference_bounds(test)
        covered += low <= loss <= high
    # The interval is the set of means neither process rejects, each at 5 %: at least 90 % coverage, always.
    assert covered / runs >= 0.90 - 3 * math.sqrt(0.09 / runs)


def test_losses_orient_the_scores_by_what_is_better():
    assert losses([1, 0, 1], [1, 1, 0], higher_is_better=True) == [0.5, 1.0, 0.0]  # accuracy: lost item 2
    assert losses([0.2], [0.6], higher_is_better=False) == [pytest.approx(0.3)]  # a rate: candidate lower, better
    with pytest.raises(ValueError):
        losses([1], [1, 0], higher_is_better=True)


def test_identical_answers_pass_after_a_computable_number_of_pairs():
    need = concordant_items_to_pass(0.05, ALPHA, BETA)
    assert need is not None and 50 < need < 200
    test = paired_test(0.05, ALPHA, BETA)
    assert test.observe([0.5] * (need - 1)).status == "continue"
    assert test.observe([0.5]).status == "pass"
    assert concordant_items_to_pass(0.02, ALPHA, BETA) > need > concordant_items_to_pass(0.1, ALPHA, BETA)


def test_mcnemar_and_newcombe_read_the_discordant_pairs():
    from scipy.stats import binomtest

    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(27, 2) == pytest.approx(binomtest(2, 29, 0.5).pvalue)
    low, high = newcombe_paired(38, 2, 27, 53, 0.95)  # the Q2_K rung against Q4_K_M, 120 questions
    assert low < (2 - 27) / 120 < high < 0
    low, high = newcombe_paired(60, 0, 0, 60, 0.95)
    assert low <= 0 <= high and high - low < 0.1
    with pytest.raises(ValueError):
        paired_test(1.0, ALPHA, BETA)


def test_all_of_stops_at_the_first_fail_and_passes_only_when_every_test_has():
    sprt = BernoulliSPRT(threshold=0.3, alpha=ALPHA, beta=BETA, delta=0.2)
    paired = paired_test(0.05, ALPHA, BETA)
    both = AllOf([sprt, paired])
    rows = [(1.0, 1.0)] * 200  # every answer right, every one a regression against a perfect baseline
    used, decision = run_in_rounds(both, lambda a, b: rows[a:b], 200, 10)
    assert decision is not None and decision.status == "fail" and used < 200
    assert paired.decision is not None and paired.decision.status == "fail"
    sprt2, paired2 = BernoulliSPRT(threshold=0.3, alpha=ALPHA, beta=BETA, delta=0.2), paired_test(0.05, ALPHA, BETA)
    rows = [(1.0, 0.5)] * 300  # right and concordant: the SPRT passes first, the paired test later
    used, decision = run_in_rounds(AllOf([sprt2, paired2]), lambda a, b: rows[a:b], 300, 10)
    assert decision.status == "pass" and sprt2.decision.status == paired2.decision.status == "pass"
    need = concordant_items_to_pass(0.05, ALPHA, BETA)
    assert used % 10 == 0 and need <= used < need + 10  # the first look after the paired test can pass
    assert sprt2.decision.n < paired2.decision.n == used
