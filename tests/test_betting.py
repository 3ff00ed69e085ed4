"""The hallucination gate's betting test: error rates by seeded simulation on several score distributions
(including the hardest, two-point ones), early stopping, and the properties every input must keep."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeready.sequential.betting import (
    BettingMeanTest,
    betting_decide,
    cumulative_log_capital,
    log_capital,
    simulate,
)

ALPHA, RATE, DELTA, RUNS, CAP, ROUND = 0.05, 0.6, 0.05, 2000, 300, 5


def beta_scores(mean, sd):
    k = mean * (1 - mean) / sd**2 - 1
    return lambda rng, shape: rng.beta(mean * k, (1 - mean) * k, shape)


def two_point(low, high, mean):
    """Scores that are `low` or `high` only, with the given mean: the widest spread for that mean."""
    share = (mean - low) / (high - low)
    return lambda rng, shape: np.where(rng.random(shape) < share, high, low)


DISTRIBUTIONS = {
    "beta sd 0.12 (like real passage scores)": lambda m: beta_scores(m, 0.12),
    "beta sd 0.25": lambda m: beta_scores(m, 0.25),
    "two-point {0, 1}": lambda m: two_point(0.0, 1.0, m),
    "two-point around the mean": lambda m: two_point(m - 0.2, m + 0.2, m),
}


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_false_pass_rate_at_most_alpha_when_the_rate_equals_the_maximum(name):
    s = simulate(DISTRIBUTIONS[name](RATE), RATE, ALPHA, delta=DELTA, round_size=ROUND, max_items=CAP,
                 runs=RUNS, seed=21)
    assert s.pass_rate <= ALPHA


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_false_fail_rate_at_most_beta_at_the_margin(name):
    s = simulate(DISTRIBUTIONS[name](RATE - DELTA), RATE, ALPHA, delta=DELTA, round_size=ROUND, max_items=CAP,
                 runs=RUNS, seed=22)
    assert s.fail_rate <= ALPHA


@pytest.mark.parametrize("shift", [-0.2, +0.2])
def test_far_from_the_maximum_it_stops_early_with_the_right_verdict(shift):
    s = simulate(beta_scores(RATE + shift, 0.12), RATE, ALPHA, delta=DELTA, round_size=ROUND, max_items=CAP,
                 runs=RUNS, seed=23)
    right = s.pass_rate if shift < 0 else s.fail_rate
    assert right >= 0.99 and s.p90_items <= 40


def test_class_decides_exactly_like_the_simulated_rule():
    rng = np.random.default_rng(7)
    ends = np.arange(ROUND, 101, ROUND)
    x = rng.beta(4, 4, (40, 100))
    codes = betting_decide(x, RATE, DELTA, ALPHA, ALPHA, ends)
    for row, row_codes in zip(x, codes, strict=True):
        d = BettingMeanTest(RATE, ALPHA, delta=DELTA).run_rounds(row.tolist(), ROUND, 100)
        stop = np.flatnonzero(row_codes)
        if stop.size:
            assert d.n == ends[stop[0]] and d.status == ("pass" if row_codes[stop[0]] == 1 else "fail")
        else:
            assert d.n == 100 and d.status == "fail" and d.by_budget


unit = st.floats(0.0, 1.0, allow_nan=False)


@settings(deadline=None)
@given(x=st.lists(unit, min_size=1, max_size=200), m=st.floats(0.01, 0.99), side=st.sampled_from([1, -1]))
def test_every_bet_keeps_the_capital_positive(x, m, side):
    """Whatever the scores, no factor reaches 0: the capital stays a finite, valid e-process."""
    logs = cumulative_log_capital(np.array(x), m, side)
    assert np.all(np.isfinite(logs))
    assert log_capital(np.array(x), m, side)[0] == pytest.approx(logs[-1])


@settings(deadline=None)
@given(x=st.lists(unit, min_size=1, max_size=120))
def test_interval_is_ordered_and_agrees_with_the_decision(x):
    t = BettingMeanTest(RATE, ALPHA, delta=DELTA)
    d = t.observe(x)
    assert 0.0 <= d.lower <= d.upper <= 1.0
    assert (d.status == "pass") == (d.log_evalue_pass >= math.log(1 / ALPHA))
    if d.status == "pass":
        # Shown below the maximum: the maximum is not inside the interval's upper part.
        assert d.upper <= RATE + 0.002


def test_zeros_pass_and_ones_fail_quickly():
    assert BettingMeanTest(RATE, ALPHA).run_rounds([0.0] * 50, 5, 50).status == "pass"
    d = BettingMeanTest(RATE, ALPHA).run_rounds([1.0] * 50, 5, 50)
    assert d.status == "fail" and not d.by_budget and "1/beta = 20" in d.reason


def test_reachable_and_bad_input():
    assert BettingMeanTest(RATE, ALPHA).reachable(10) and not BettingMeanTest(0.02, ALPHA, delta=0.01).reachable(2)
    with pytest.raises(ValueError, match="within"):
        BettingMeanTest(RATE, ALPHA).observe([1.5])
    with pytest.raises(ValueError, match="within"):
        BettingMeanTest(RATE, ALPHA).observe([float("nan")])
    with pytest.raises(ValueError, match="delta"):
        BettingMeanTest(0.3, ALPHA, delta=0.3)
    with pytest.raises(ValueError):
        simulate(lambda rng, shape: rng.random(shape) * 2, RATE, ALPHA, round_size=5, max_items=10, runs=3, seed=0)
