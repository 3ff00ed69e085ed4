"""A huge sequential budget must not hang target loading (issue 19, item 10): the items a gate may score are
capped with a clear error, and the exact power check that runs at load time stays fast and exact."""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import binom

from edgeready.errors import ConfigError
from edgeready.schema import SequentialOptions
from edgeready.sequential import sprt
from edgeready.sequential.mixture import SequentialProportionTest
from edgeready.targets import load_target
from tests.conftest import ROOT

LIMIT = SequentialOptions.__private_attributes__["_MAX_ITEMS"].default


@contextmanager
def deadline(seconds: float):
    """Fail instead of hanging (before the fix, loading took minutes at 10^5 items and more at 10^6)."""
    def overtime(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, overtime)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def target_file(tmp_path: Path, gate: str = "accuracy", drop: tuple[str, ...] = (), **changes: object) -> Path:
    """The default device target with the `gate` block changed (and keys in `drop` removed)."""
    doc = yaml.safe_load((ROOT / "thresholds" / "device" / "default.yaml").read_text())
    block = doc["gates"][gate]
    block.update(changes)
    for key in drop:
        block.pop(key)
    path = tmp_path / "device" / "huge.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def timed_load(path: Path) -> tuple[Exception | None, float]:
    start = time.process_time()
    with deadline(30):
        try:
            load_target(path)
            error = None
        except ConfigError as exc:
            error = exc
    return error, time.process_time() - start


@pytest.mark.parametrize(("gate", "changes", "drop", "key"), [
    ("accuracy", {"sample_size": 1_000_000}, (), "sample_size"),
    ("accuracy", {"max_items": 1_000_000}, (), "max_items"),
    ("accuracy", {"sample_size": 1_000_000, "test": "mixture"}, (), "sample_size"),
    ("hallucination", {"mode": "sequential", "max_items": 1_000_000, "delta": 0.1}, (), "max_items"),
    ("accuracy", {"mode": "fixed", "sample_size": 1_000_000}, ("round_size", "delta"), "sample_size"),
])
def test_a_million_items_is_refused_at_once_with_the_limit(tmp_path, gate, changes, drop, key):
    path = target_file(tmp_path, gate, drop, **changes)
    error, cpu = timed_load(path)
    assert error is not None and cpu < 2.0, f"{cpu:.2f} s"
    message = str(error)
    assert str(path) in message and f"gates.{gate}" in message
    assert f"{key} 1000000 is above the limit of {LIMIT:,} items a gate may score" in message


@pytest.mark.parametrize("test", ["sprt", "mixture"])
@pytest.mark.parametrize("delta", [0.1, 0.002])
def test_the_largest_budget_allowed_loads_within_seconds(tmp_path, test, delta):
    """The worst case left: the limit, a look after every item, and (0.002) a margin so thin that the test
    rarely decides, so the power check walks every look and then searches a bigger budget."""
    path = target_file(tmp_path, sample_size=LIMIT, round_size=1, delta=delta, test=test)
    error, cpu = timed_load(path)
    assert cpu < 3.0, f"{cpu:.2f} s"
    if delta == 0.1:
        assert error is None
    else:
        assert error is not None and "too small for power" in str(error)


def reference_oc(p, rule, round_size, max_items):
    """The walk over the whole lattice, every count 0..n at every look (the O(n^2) original)."""
    alive, n, passed, failed, items = np.ones(1), 0, 0.0, 0.0, 0.0
    while n < max_items:
        step = min(round_size, max_items - n)
        alive = np.convolve(alive, binom.pmf(np.arange(step + 1), step, p))
        n += step
        codes = rule(np.arange(n + 1), n)
        p_pass, p_fail = alive[codes == 1].sum(), alive[codes == -1].sum()
        passed, failed, items = passed + p_pass, failed + p_fail, items + n * (p_pass + p_fail)
        alive = np.where(codes == 0, alive, 0.0)
    return passed, failed, alive.sum(), items + max_items * alive.sum()


@pytest.mark.parametrize(("thr", "delta", "round_size", "cap"), [
    (0.35, 0.1, 10, 854), (0.35, 0.05, 1, 1500), (0.6, 0.02, 7, 2000), (0.2, 0.1, 25, 333),
])
def test_the_fast_walk_is_the_full_lattice_walk(thr, delta, round_size, cap):
    rules = [sprt.sprt_rule(thr, delta, 0.05, 0.1),
             SequentialProportionTest(threshold=thr, alpha=0.05, beta=0.1, delta=delta).rule()]
    for rule in rules:
        for p in (thr - 0.05, thr, thr + delta / 2, thr + delta, min(thr + delta + 0.1, 0.99)):
            op = sprt.operating_characteristics(p, rule, round_size, cap)
            passed, failed, undecided, items = reference_oc(p, rule, round_size, cap)
            assert op.pass_prob == pytest.approx(passed, abs=1e-11)
            assert op.fail_prob == pytest.approx(failed, abs=1e-11)
            assert op.undecided_prob == pytest.approx(undecided, abs=1e-11)
            assert op.mean_items == pytest.approx(items, abs=1e-11 * cap)


def test_one_walk_finds_the_budget_that_separate_walks_find():
    rule, p1, beta = sprt.sprt_rule(0.35, 0.03, 0.05, 0.05), 0.38, 0.05
    found = sprt.budget_for_power(rule, p1, beta, 10, 300)
    caps = [300 * 2**i for i in range(6)]
    expected = next(c for c in caps if sprt.operating_characteristics(p1, rule, 10, c).reject_prob <= beta)
    assert found == expected
    assert sprt.budget_for_power(rule, p1, beta, 10, 300, limit=found - 1) is None
    assert sprt.MAX_BUDGET == LIMIT  # suggesting a budget that the schema refuses would not help


def test_a_look_after_thousands_of_items_does_not_overflow():
    """One look of 5,000 items: math.comb(5000, 2500) is no float; the walk sums the coefficients as logs."""
    def rule(k, n):
        return np.where(k >= 1800, 1, -1)

    op = sprt.operating_characteristics(0.35, rule, round_size=5000, max_items=5000)
    assert op.pass_prob == pytest.approx(binom.sf(1799, 5000, 0.35), rel=1e-9)
    assert math.isclose(op.pass_prob + op.fail_prob, 1.0, abs_tol=1e-12)
