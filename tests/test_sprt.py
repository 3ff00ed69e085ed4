"""The accuracy gate's SPRT: exact error rates by dynamic programming, the fixed-n design it is compared
with, early stopping, and that the class decides exactly like the rule the exact computation uses."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from edgeready.sequential.sprt import (
    BernoulliSPRT,
    fixed_n_design,
    llr_steps,
    operating_characteristics,
    sprt_decide,
    sprt_rule,
)


def wald_lower_bound(p0, p1, alpha, beta):
    """Fewest expected items at p1 of ANY test with error rates alpha (at p0) and beta (at p1): the binary
    KL divergence d(1 - beta || alpha) over the per-item KL divergence (Wald 1945; data processing)."""
    def kl(a, b):
        return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))

    return kl(1 - beta, alpha) / kl(p1, p0)


@settings(max_examples=25, deadline=None)
@given(threshold=st.floats(0.1, 0.8), delta=st.floats(0.06, 0.15), alpha=st.floats(0.01, 0.2),
       beta=st.floats(0.01, 0.2), round_size=st.integers(1, 25))
def test_exact_error_rates_are_within_alpha_and_beta(threshold, delta, alpha, beta, round_size):
    delta = min(delta, 0.95 - threshold)
    cap = min(3 * fixed_n_design(threshold, delta, alpha, beta).n, 3000)
    rule = sprt_rule(threshold, delta, alpha, beta)
    for p in (threshold - 0.05, threshold):
        if p > 0:
            assert operating_characteristics(p, rule, round_size, cap).pass_prob <= alpha
    for p in (threshold + delta, min(threshold + delta + 0.05, 0.99)):
        assert operating_characteristics(p, rule, round_size, cap).fail_prob <= beta


def test_one_look_is_the_binomial_tail():
    """A rule that looks once at n = 50 and passes at k >= 20 is the exact binomial test: the DP must agree."""
    def rule(k, n):
        return np.where(k >= 20, 1, -1)

    for p in (0.2, 0.4, 0.6):
        op = operating_characteristics(p, rule, round_size=50, max_items=50)
        assert op.pass_prob == pytest.approx(binom.sf(19, 50, p), abs=1e-12)
        assert op.fail_prob == pytest.approx(binom.cdf(19, 50, p), abs=1e-12)
        assert op.undecided_prob == pytest.approx(0.0, abs=1e-12) and op.mean_items == pytest.approx(50)


def test_exact_computation_agrees_with_monte_carlo_of_the_class():
    thr, delta, alpha, round_size, cap = 0.35, 0.1, 0.05, 10, 400
    exact = operating_characteristics(0.42, sprt_rule(thr, delta, alpha, alpha), round_size, cap)
    rng = np.random.default_rng(3)
    runs = 1500
    outcomes, items = [], []
    for _ in range(runs):
        scores = (rng.random(cap) < 0.42).astype(int).tolist()
        d = BernoulliSPRT(thr, alpha, delta=delta).run_rounds(scores, round_size, cap)
        outcomes.append(d.status == "pass")
        items.append(d.n)
    se = math.sqrt(exact.pass_prob * (1 - exact.pass_prob) / runs)
    assert abs(np.mean(outcomes) - exact.pass_prob) < 4 * se + 1e-9
    assert abs(np.mean(items) - exact.mean_items) < 4 * np.std(items) / math.sqrt(runs)


def test_class_decides_exactly_like_the_rule():
    rng = np.random.default_rng(5)
    thr, delta, alpha, beta, round_size, cap = 0.5, 0.05, 0.05, 0.1, 20, 600
    ends = np.arange(round_size, cap + 1, round_size)
    for p in (0.4, 0.52, 0.6):
        for _ in range(30):
            row = rng.random(cap) < p
            codes = sprt_decide(np.cumsum(row)[ends - 1], ends, thr, delta, alpha, beta)
            d = BernoulliSPRT(thr, alpha, beta=beta, delta=delta).run_rounds(row.astype(int).tolist(), round_size, cap)
            stop = np.flatnonzero(codes)
            if stop.size:
                assert d.n == ends[stop[0]] and not d.by_budget
                assert d.status == ("pass" if codes[stop[0]] == 1 else "fail")
            else:
                assert d.n == cap and d.status == "fail" and d.by_budget and "max_items" in d.reason


def test_fixed_n_design_is_the_smallest_with_those_error_rates():
    for thr, delta in ((0.35, 0.05), (0.6, 0.1), (0.2, 0.03)):
        d = fixed_n_design(thr, delta, 0.05, 0.1)
        assert d.alpha <= 0.05 and d.power >= 0.9
        assert binom.sf(d.k_min - 1, d.n, thr) == pytest.approx(d.alpha)
        # One item fewer, with its own most powerful level-alpha cut, does not reach the power.
        k = int(binom.isf(0.05, d.n - 1, thr)) + 1
        assert binom.sf(k - 1, d.n - 1, thr) <= 0.05 and binom.sf(k - 1, d.n - 1, thr + delta) < 0.9


@pytest.mark.parametrize("threshold", [0.35, 0.6])
def test_items_used_against_fixed_n_at_equal_error_rates(threshold):
    """The reason for the test: far from the minimum a small share of the fixed-n items; 5 points below it
    (outside the indifference zone) under 40 %; on the alternative itself no better than Wald's bound for
    ANY test allows."""
    delta, alpha = 0.05, 0.05
    fixed = fixed_n_design(threshold, delta, alpha, alpha)
    rule = sprt_rule(threshold, delta, alpha, alpha)

    def share(p):
        return operating_characteristics(p, rule, 10, 3 * fixed.n).mean_items / fixed.n

    assert share(threshold - 0.2) < 0.1 and share(threshold + 0.2) < 0.15
    assert share(threshold - 0.05) <= 0.40
    assert share(threshold + delta) >= wald_lower_bound(threshold, threshold + delta, fixed.alpha, 1 - fixed.power) \
        / fixed.n


def test_the_test_stops_with_a_reason_and_refuses_more():
    t = BernoulliSPRT(0.35, 0.05)
    d = t.update(30, 40)
    assert d.status == "pass" and d.log_evalue_pass >= math.log(20)
    assert d.reason.startswith("stopped at n=40 because the likelihood ratio") and "30/40" in d.reason
    assert d.lower <= 30 / 40 <= d.upper
    with pytest.raises(RuntimeError):
        t.update(1, 1)
    d = BernoulliSPRT(0.35, 0.05).update(1, 60)
    assert d.status == "fail" and "1/beta = 20" in d.reason


def test_budget_spent_is_a_fail_not_shown():
    d = BernoulliSPRT(0.5, 0.05, delta=0.02).run_rounds([1, 0] * 50, round_size=10, max_items=60)
    assert d.status == "fail" and d.by_budget and d.n == 60 and "not shown" in d.reason


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="delta"):
        BernoulliSPRT(0.5, 0.05, delta=0.0)
    with pytest.raises(ValueError, match="delta"):
        BernoulliSPRT(0.9, 0.05, delta=0.2)
    with pytest.raises(ValueError):
        BernoulliSPRT(0.5, 1.0)
    with pytest.raises(ValueError, match="0 or 1"):
        BernoulliSPRT(0.5, 0.05).observe([0.5])
    with pytest.raises(ValueError, match="power"):
        fixed_n_design(0.5, 0.01, 0.05, 0.05, n_max=100)


@settings(deadline=None)
@given(threshold=st.floats(0.05, 0.9), delta=st.floats(0.01, 0.09), k=st.integers(0, 500), extra=st.integers(1, 50))
def test_more_correct_answers_never_hurt(threshold, delta, k, extra):
    """The log-likelihood ratio grows with each correct answer, so a pass stays a pass with more of them."""
    up, down = llr_steps(threshold, threshold + delta)
    assert up > 0 > down
    n = k + extra
    assert BernoulliSPRT(threshold, 0.05, delta=delta).log_lr(k + 1, n) > BernoulliSPRT(
        threshold, 0.05, delta=delta).log_lr(k, n)


def test_reachable_within_the_budget():
    t = BernoulliSPRT(0.9, 0.05, delta=0.05)
    # log(0.95/0.9) per correct answer: 56 in a row reach log(20).
    assert not t.reachable(55) and t.reachable(56)
