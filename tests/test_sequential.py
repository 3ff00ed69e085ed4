"""The sequential accuracy test: its error guarantees by seeded simulation, early stopping far from the
threshold, and the interval's structural properties (hypothesis)."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeready.sequential.mixture import SequentialProportionTest, confidence_bounds, decide, simulate

ALPHA = 0.05
MAX_ITEMS = 400
ROUND = 10
RUNS = 2000


@pytest.mark.parametrize("threshold", [0.35, 0.6, 0.8])
def test_false_pass_rate_at_most_alpha_5_points_below(threshold):
    s = simulate(threshold - 0.05, threshold, ALPHA, round_size=ROUND, max_items=MAX_ITEMS, runs=RUNS, seed=11)
    assert s.pass_rate <= ALPHA


@pytest.mark.parametrize("threshold", [0.35, 0.6])
def test_false_pass_rate_at_most_alpha_at_the_threshold_itself(threshold):
    # p = p_min is the worst case of the null "p <= p_min"; the guarantee still holds there.
    s = simulate(threshold, threshold, ALPHA, round_size=ROUND, max_items=MAX_ITEMS, runs=RUNS, seed=12)
    assert s.pass_rate <= ALPHA


def test_false_fail_rate_at_most_beta_above_the_indifference_zone():
    thr, beta, delta = 0.5, 0.1, 0.05
    s = simulate(thr + delta, thr, ALPHA, beta=beta, delta=delta, round_size=ROUND, max_items=MAX_ITEMS,
                 runs=RUNS, seed=13)
    assert s.fail_rate <= beta


@pytest.mark.parametrize("threshold", [0.35, 0.6])
@pytest.mark.parametrize("shift", [+0.2, -0.2])
def test_far_from_threshold_stops_early(threshold, shift):
    s = simulate(threshold + shift, threshold, ALPHA, round_size=ROUND, max_items=MAX_ITEMS, runs=RUNS, seed=14)
    right = s.pass_rate if shift > 0 else s.fail_rate
    assert right >= 0.99
    # 90% of runs stop within 40% of the budget.
    assert s.p90_items <= 0.4 * MAX_ITEMS


def test_class_decides_exactly_like_the_simulated_rule():
    """simulate() is vectorized over `decide`; the class must stop at the same round with the same verdict."""
    rng = np.random.default_rng(5)
    thr, max_items, round_size = 0.5, 120, 20
    for p in (0.3, 0.5, 0.7):
        scores = rng.random((40, max_items)) < p
        ends = np.arange(round_size, max_items + 1, round_size)
        codes = decide(np.cumsum(scores, axis=1)[:, ends - 1], np.broadcast_to(ends, (40, len(ends))), thr,
                       ALPHA, ALPHA, 0.0, 8 * thr, 8 * (1 - thr))
        for row, row_codes in zip(scores, codes, strict=True):
            d = SequentialProportionTest(thr, ALPHA).run_rounds(row.astype(int).tolist(), round_size, max_items)
            stop = np.flatnonzero(row_codes)
            if stop.size:
                assert d.n == ends[stop[0]]
                assert d.status == ("pass" if row_codes[stop[0]] == 1 else "fail")
            else:
                assert d.n == max_items and d.status == "fail" and "max_items" in d.reason


counts = st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@settings(deadline=None)  # timing on a shared 2-core host is no property of the test
@given(kn=counts, level=st.floats(0.001, 0.5), weight=st.floats(0.5, 32))
def test_interval_contains_the_empirical_mean(kn, level, weight):
    k, n = kn
    a, b = weight * 0.4, weight * 0.6
    low, high = confidence_bounds(k, n, level, a, b)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert low < high


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 600), level=st.floats(0.001, 0.5))
def test_bounds_grow_with_successes(n, level):
    bounds = [confidence_bounds(k, n, level, 3.2, 4.8) for k in range(0, n + 1, max(1, n // 25))]
    lows, highs = zip(*bounds, strict=True)
    assert all(x <= y + 1e-9 for x, y in itertools.pairwise(lows))
    assert all(x <= y + 1e-9 for x, y in itertools.pairwise(highs))


@settings(deadline=None)  # timing on a shared 2-core host is no property of the test
@given(kn=counts, small=st.floats(0.001, 0.2), factor=st.floats(1.01, 4))
def test_smaller_alpha_gives_a_wider_interval(kn, small, factor):
    k, n = kn
    tight = confidence_bounds(k, n, min(small * factor, 0.9), 4, 4)
    wide = confidence_bounds(k, n, small, 4, 4)
    assert wide[0] <= tight[0] + 1e-9 and wide[1] >= tight[1] - 1e-9


@settings(deadline=None)  # timing on a shared 2-core host is no property of the test
@given(kn=counts, threshold=st.floats(0.05, 0.9), alpha=st.floats(0.005, 0.2), delta=st.floats(0, 0.09))
def test_verdict_agrees_with_the_reported_bounds(kn, threshold, alpha, delta):
    k, n = kn
    t = SequentialProportionTest(threshold, alpha, delta=delta)
    d = t.update(k, n)
    ref = threshold + delta
    if abs(d.lower - threshold) < 1e-7 or abs(d.upper - ref) < 1e-7:
        return  # on the boundary root-finding tolerance decides, not the rule
    assert (d.status == "pass") == (d.lower >= threshold)
    if d.status != "pass":
        assert (d.status == "fail") == (d.upper < ref)
    assert d.reason.startswith("stopped at n=") == (d.status != "continue")


@settings(deadline=None)  # timing on a shared 2-core host is no property of the test
@given(rounds=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=12))
def test_only_totals_matter_not_how_they_were_split(rounds):
    rounds = [(min(s, n), n) for s, n in rounds]
    t = SequentialProportionTest(0.5, ALPHA)
    d = None
    for s, n in rounds:
        d = t.update(s, n)
        if d.status != "continue":
            break
    assert d is not None
    once = SequentialProportionTest(0.5, ALPHA).update(d.successes, d.n)
    assert (once.status, once.lower, once.upper) == (d.status, d.lower, d.upper)


def test_a_pass_stays_a_pass_with_more_successes():
    n = 100
    statuses = [SequentialProportionTest(0.5, ALPHA).update(k, n).status for k in range(n + 1)]
    first_pass = statuses.index("pass")
    last_fail = max(i for i, s in enumerate(statuses) if s == "fail")
    assert all(s == "pass" for s in statuses[first_pass:])
    assert all(s == "fail" for s in statuses[: last_fail + 1])
    assert last_fail < first_pass


def test_run_rounds_reads_only_what_it_needs():
    consumed = 0

    def scores():
        nonlocal consumed
        while True:
            consumed += 1
            yield 1

    d = SequentialProportionTest(0.5, ALPHA).run_rounds(scores(), round_size=5, max_items=500)
    assert d.status == "pass" and d.n % 5 == 0 and consumed == d.n
    assert f"stopped at n={d.n} because" in d.reason


def test_budget_or_items_exhausted_is_a_fail_not_a_pass():
    alternating = [1, 0] * 100
    d = SequentialProportionTest(0.5, ALPHA).run_rounds(alternating, round_size=10, max_items=60)
    assert d.status == "fail" and d.n == 60 and "max_items reached" in d.reason
    d = SequentialProportionTest(0.5, ALPHA).run_rounds(alternating[:30], round_size=20, max_items=60)
    assert d.status == "fail" and d.n == 30 and "no more items" in d.reason


def test_refuses_bad_input_and_updates_after_a_verdict():
    with pytest.raises(ValueError):
        SequentialProportionTest(1.0, ALPHA)
    with pytest.raises(ValueError):
        SequentialProportionTest(0.5, 0.0)
    with pytest.raises(ValueError):
        SequentialProportionTest(0.9, ALPHA, delta=0.2)
    t = SequentialProportionTest(0.5, ALPHA)
    with pytest.raises(ValueError):
        t.update(3, 2)
    with pytest.raises(ValueError):
        t.run_rounds([0.5], round_size=1, max_items=1)
    assert t.update(200, 200).status == "pass"
    with pytest.raises(RuntimeError):
        t.update(1, 1)


def test_evalue_is_reported_in_the_reason():
    d = SequentialProportionTest(0.35, ALPHA).update(26, 40)
    assert d.status == "pass" and d.log_evalue_pass >= math.log(1 / ALPHA)
    assert "1/alpha = 20" in d.reason and "26/40" in d.reason
