"""What every sequential test of the suite shares: the decision after a round, and the loop over rounds.

A test sees the items' scores a round at a time and after each round says pass, fail or continue. Its
guarantees come from nonnegative supermartingales and Ville's inequality, so they hold whatever the
round sizes and however often it looks; stopping at the item budget without a verdict is a fail ("not
shown"), which can only lower the false-pass rate.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Literal

from edgeready.measurement import SequentialOutcome

Status = Literal["pass", "fail", "continue"]


@dataclass(frozen=True)
class Decision:
    """Where a test stands after n scored items.

    lower/upper: the always-valid interval for the quantity tested (for reading: the decision is made by
    the two e-values). log_evalue_pass is the evidence against "not good enough", log_evalue_fail the
    evidence against "good by the indifference margin"; the test passes when the first reaches
    log(1/alpha) and fails when the second reaches log(1/beta).
    """

    status: Status
    n: int
    estimate: float | None
    lower: float
    upper: float
    log_evalue_pass: float
    log_evalue_fail: float
    reason: str
    successes: int | None = None  # binary scores only
    # True when the budget (or the items) ran out before either boundary was reached: a fail by rule,
    # "not shown", which the advice treats as inconclusive rather than as evidence against the model.
    by_budget: bool = False


@dataclass
class SequentialTest(ABC):
    """Accumulates rounds of scores and decides after each one. After a pass or fail the verdict is final
    and further rounds are refused."""

    threshold: float
    alpha: float
    beta: float | None = None  # defaults to alpha
    delta: float | None = None  # indifference margin; the subclass sets its default
    history: list[Decision] = field(default_factory=list, init=False)

    name = "sequential test"

    def __post_init__(self) -> None:
        if self.beta is None:
            self.beta = self.alpha
        for label, level in (("alpha", self.alpha), ("beta", self.beta)):
            if not 0 < level < 1:
                raise ValueError(f"{label} must be within (0, 1), got {level}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be within (0, 1), got {self.threshold}")

    @property
    def decision(self) -> Decision | None:
        return self.history[-1] if self.history else None

    def observe(self, scores: Sequence[float]) -> Decision:
        """One round: the scores of the items scored since the last round."""
        last = self.decision
        if last is not None and last.status != "continue":
            raise RuntimeError(f"the test already stopped ({last.status}); start a new one")
        self._add(scores)
        decision = self._evaluate()
        self.history.append(decision)
        return decision

    def run_rounds(self, scores: Iterable[float], round_size: int, max_items: int) -> Decision:
        """Consume `scores` lazily, a round at a time and never more than needed, at most `max_items`;
        return the final decision. Ending without a verdict (budget spent or scores exhausted) is a fail.
        The gates run the same loop (`run_in_rounds`) over items they generate and score round by round."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        it: Iterator[float] = iter(scores)
        _, decision = run_in_rounds(self, lambda start, stop: list(islice(it, stop - start)), max_items, round_size)
        assert decision is not None
        return decision

    def finish(self, why: str = "max_items reached") -> Decision:
        """End without a verdict: a fail, since the candidate was not shown to be good enough."""
        decision = self.decision or self._evaluate()
        if decision.status != "continue":
            return decision
        final = replace(decision, status="fail", by_budget=True,
                        reason=f"stopped at n={decision.n} ({why}) without a verdict: {self._not_shown(decision)} "
                               f"({self.levels()})")
        self.history.append(final)
        return final

    def levels(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:g}" + (f", delta={self.delta:g}" if self.delta else "")

    @abstractmethod
    def _add(self, scores: Sequence[float]) -> None:
        """Take one round of scores into the running state (validating them)."""

    @abstractmethod
    def _evaluate(self) -> Decision:
        """The decision for the running state."""

    @abstractmethod
    def _not_shown(self, decision: Decision) -> str:
        """Why an undecided test is a fail, in words."""


@dataclass
class BinaryTest(SequentialTest):
    """A test on 0/1 scores (correct or not): it keeps the running counts."""

    successes: int = field(default=0, init=False)
    n: int = field(default=0, init=False)

    def update(self, successes: int, n: int) -> Decision:
        """One round given as counts: n new items, `successes` of them correct (increments, not totals)."""
        if n < 0 or not 0 <= successes <= n:
            raise ValueError(f"a round needs 0 <= successes <= n, got {successes} of {n}")
        return self.observe([1] * int(successes) + [0] * (int(n) - int(successes)))

    def _add(self, scores: Sequence[float]) -> None:
        bad = [s for s in scores if s not in (0, 1)]
        if bad:
            raise ValueError(f"scores must be 0 or 1 for this test, got {bad[0]!r}")
        self.successes += int(sum(scores))
        self.n += len(scores)


class AllOf:
    """Several sequential tests looking at one stream of items, each item giving one score per test (a tuple).

    The stream stops as soon as one test fails (the gate fails whatever the others say) or all have passed; a
    test that has decided stops looking while the others go on. Each keeps its own guarantee: the gate
    passes only if every test passed, so its false-pass rate is at most the smallest of their alphas."""

    def __init__(self, tests: Sequence[SequentialTest]):
        if not tests:
            raise ValueError("AllOf needs at least one test")
        self.tests = list(tests)

    @property
    def decision(self) -> Decision | None:
        decisions = [t.decision for t in self.tests]
        if any(d is None for d in decisions):
            return None
        return self._combined([d for d in decisions if d is not None])

    def observe(self, rows: Sequence[Sequence[float]]) -> Decision:
        for i, test in enumerate(self.tests):
            if test.decision is None or test.decision.status == "continue":
                test.observe([row[i] for row in rows])
        decision = self.decision
        assert decision is not None
        return decision

    def finish(self, why: str = "max_items reached") -> Decision:
        return self._combined([t.finish(why) for t in self.tests])

    @staticmethod
    def _combined(decisions: list[Decision]) -> Decision:
        failed = [d for d in decisions if d.status == "fail"]
        if failed:
            return failed[0]
        waiting = [d for d in decisions if d.status == "continue"]
        return waiting[0] if waiting else decisions[0]


ScoreRound = Callable[[int, int], Sequence[Any]]


def run_in_rounds(test: SequentialTest | AllOf | None, score_round: ScoreRound, n_items: int, round_size: int,
                  budget: int | None = None) -> tuple[int, Decision | None]:
    """The one loop over rounds, for the gates and for `SequentialTest.run_rounds`.

    `score_round(start, stop)` produces and scores items [start, stop) only when their round is reached, so a
    test that decides early never pays for the rest; a None score is an item that gave nothing to score (an
    empty passage): produced and counted, not shown to the test. A round shorter than asked means the source
    ran dry. Without a test (a fixed-n gate) all `n_items` are scored in one round. `budget` is the plan's
    max_items (default n_items; fewer items than that means the data or --limit ran out first). Returns how many
    items were produced and the final decision; ending without a verdict is a fail by rule (`finish`)."""
    if round_size < 1:
        raise ValueError(f"round_size must be >= 1, got {round_size}")
    if test is None:
        return len(score_round(0, n_items)), None
    if test.decision is not None and test.decision.status != "continue":
        return 0, test.decision
    done = 0
    while done < n_items:
        asked = min(round_size, n_items - done)
        scores = score_round(done, done + asked)
        if not scores:
            break
        done += len(scores)
        decision = test.observe([s for s in scores if s is not None])
        if decision.status != "continue":
            return done, decision
        if len(scores) < asked:
            break
    limit = n_items if budget is None else budget
    return done, test.finish("max_items reached" if done >= limit else f"no more items, all {done} used")


def outcome(test: SequentialTest, decision: Decision, items_used: int, max_items: int, round_size: int,
            fixed_n_equivalent: dict[str, Any] | None) -> SequentialOutcome:
    """What a measurement says of its sequential plan (edgeready.measurement.SequentialOutcome)."""
    assert decision.status != "continue" and test.beta is not None
    stopped_by: Literal["pass boundary", "fail boundary", "budget"] = (
        "budget" if decision.by_budget else "pass boundary" if decision.status == "pass" else "fail boundary")
    return SequentialOutcome(
        test=test.name, threshold=test.threshold, delta=float(test.delta or 0.0), alpha=test.alpha, beta=test.beta,
        decision=decision.status, stopped_by=stopped_by, items_used=items_used, items_scored=decision.n,
        max_items=max_items, round_size=round_size, log_evalue_pass=decision.log_evalue_pass,
        log_evalue_fail=decision.log_evalue_fail, log_boundary_pass=boundary(test.alpha), reason=decision.reason,
        fixed_n_equivalent=fixed_n_equivalent)


def boundary(level: float) -> float:
    """log(1/level): where an e-value's log must reach for a decision at `level` (Ville's inequality). Every
    rule and every report compares with this one float, so a verdict and its check can never disagree."""
    return math.log(1 / level)


def evalue_text(log_e: float) -> str:
    # exp() overflows past ~709; a huge e-value is as clear written as a power of e.
    return f"{math.exp(log_e):.3g}" if log_e < 700 else f"e^{log_e:.0f}"
