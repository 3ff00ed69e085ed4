"""Wilson bounds against published values (Newcombe 1998, Table I; Brown, Cai & DasGupta 2001), and the
Student-t interval the energy and speed gates share against scipy's."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeready.stats import student_t, wilson


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),  # Newcombe 1998, example (a)
        (15, 148, 0.0624, 0.1605),  # Newcombe 1998, example (b)
        (0, 20, 0.0, 0.1611),  # Newcombe 1998, example (c)
        (1, 29, 0.0061, 0.1718),  # Newcombe 1998, example (d)
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_matches_published_values(k, n, low, high):
    ci = wilson(k, n, 0.95)
    assert ci.low == pytest.approx(low, abs=1e-4)
    assert ci.high == pytest.approx(high, abs=1e-4)


def test_wilson_rejects_bad_input():
    with pytest.raises(ValueError):
        wilson(1, 0, 0.95)
    with pytest.raises(ValueError):
        wilson(5, 4, 0.95)
    with pytest.raises(ValueError):
        wilson(1, 4, 1.0)


@given(n=st.integers(1, 2000), data=st.data(), confidence=st.floats(0.5, 0.999))
def test_wilson_contains_the_estimate_and_stays_in_unit_interval(n, data, confidence):
    k = data.draw(st.integers(0, n))
    ci = wilson(k, n, confidence)
    assert 0.0 <= ci.low <= k / n <= ci.high <= 1.0


@given(n=st.integers(2, 500), data=st.data())
def test_higher_confidence_gives_a_lower_bound_no_higher(n, data):
    k = data.draw(st.integers(0, n))
    assert wilson(k, n, 0.99).low <= wilson(k, n, 0.90).low + 1e-12


@settings(deadline=None)  # scipy's first call imports it; timing is no property of the interval
@given(n=st.integers(1, 5000), data=st.data(), confidence=st.floats(0.5, 0.9999))
def test_wilson_closed_form_equals_scipys(n, data, confidence):
    from scipy.stats import binomtest

    k = data.draw(st.integers(0, n))
    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    ci = wilson(k, n, confidence)
    assert ci.low == pytest.approx(ref.low, abs=1e-12)
    assert ci.high == pytest.approx(ref.high, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=2, max_size=30),
       st.floats(min_value=0.5, max_value=0.999))
def test_student_t_is_scipys_interval_of_the_mean(values, confidence):
    import numpy as np
    from scipy import stats as sps

    got = student_t(values, confidence, floor=None)
    assert got is not None
    sem = float(np.std(values, ddof=1)) / len(values) ** 0.5
    if sem == 0:
        assert got.low == pytest.approx(got.high, abs=1e-9)
        return
    low, high = sps.t.interval(confidence, len(values) - 1, loc=float(np.mean(values)), scale=sem)
    assert got.low == pytest.approx(low, rel=1e-9, abs=1e-9) and got.high == pytest.approx(high, rel=1e-9, abs=1e-9)
    assert student_t(values, confidence).low == max(0.0, got.low)  # the default floor: never below 0
    assert student_t(values[:1], confidence) is None
