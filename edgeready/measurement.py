"""Measurements (a value with n, interval and provenance) and gate results (a measurement judged
against a target's threshold). Both serialize to plain JSON for verdict.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from edgeready.errors import MeasurementError
from edgeready.stats import Interval

__all__ = ["FLIPS_KEPT", "Check", "GateResult", "Judgement", "Measurement", "MeasurementError", "PairedOutcome",
           "SequentialOutcome", "Status", "judge"]

Status = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class SequentialOutcome:
    """What a sequential gate's sampling plan did. For a sequential gate the threshold is an input of the plan
    (the test is built from it), so the outcome names the threshold, margin and error rates it was run at; a
    judge decides from the evidence here and refuses a target whose plan differs (edgeready/sequential/)."""

    test: str
    threshold: float
    delta: float
    alpha: float
    beta: float
    decision: Literal["pass", "fail"]
    stopped_by: Literal["pass boundary", "fail boundary", "budget"]
    items_used: int  # generated, including items that gave nothing to score
    items_scored: int
    max_items: int
    round_size: int
    # Unrounded: the judge compares exactly the number the test decided by with exactly its boundary.
    log_evalue_pass: float
    log_evalue_fail: float
    log_boundary_pass: float
    reason: str
    # The smallest fixed-n test with the same error rates (None without a margin or a spread to size it).
    fixed_n_equivalent: dict[str, Any] | None = None
    mode: Literal["sequential"] = "sequential"  # for readers of verdict.json

    def plan_differs(self, test: str, threshold: float, delta: float, alpha: float, beta: float) -> str | None:
        """Why this outcome cannot be judged against another plan (None when the plans are the same)."""
        ours = (self.test, self.threshold, self.delta, self.alpha, self.beta)
        theirs = (test, threshold, delta, alpha, beta)
        if ours == theirs:
            return None
        return (f"the measurement was sampled by {self.test} for threshold {self.threshold:g}, delta {self.delta:g}, "
                f"alpha {self.alpha:g}, beta {self.beta:g}; this target asks for {test} at {threshold:g}, {delta:g}, "
                f"{alpha:g}, {beta:g}: a sequential measurement can only be judged by the plan it was sampled for")


@dataclass(frozen=True)
class PairedOutcome:
    """The candidate against its baseline on the same items: the mean loss (how much worse the candidate did,
    in the gate's units) with its always-valid interval, the non-inferiority decision at `margin` and the
    evidence it was made by, and the items that flipped (edgeready/sequential/paired.py)."""

    baseline: str  # the baseline candidate's name, or the reports folder it was read from
    source: Literal["model", "reports", "same model"]
    margin: float
    alpha: float
    n: int
    loss: float  # baseline - candidate for accuracy; candidate - baseline for a rate: > 0 is worse
    loss_lower: float
    loss_upper: float
    decision: Literal["pass", "fail"]
    stopped_by: str
    log_evalue_pass: float
    log_boundary_pass: float
    reason: str
    power_at: float = 0.0  # beta is controlled at a loss of power_at * margin (the plan, with margin and alpha)
    # Accuracy only: both right, candidate only, baseline only, neither; McNemar's p; Newcombe's interval.
    table: dict[str, Any] | None = None
    regressions: int = 0
    improvements: int = 0
    # The flipped items (at most FLIPS_KEPT of each direction; all of them are in the items file).
    flips: list[dict[str, Any]] = field(default_factory=list)


FLIPS_KEPT = 50


@dataclass
class Measurement:
    gate: str
    metric: str
    value: float
    unit: str
    n: int | None
    interval: Interval | None
    method: Literal["measured", "estimated"]
    meter: str
    provenance: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    # Set by a sequential gate; None for a fixed-n one.
    sequential: SequentialOutcome | None = None
    # Set when the target compares the candidate with a baseline on the same items.
    paired: PairedOutcome | None = None
    # What a reader must know to read the value right (e.g. a sample size capped by the data), shown with it.
    notes: list[str] = field(default_factory=list)
    # Per-item evidence (id, prompt, response, gold, score...); written to items/*.jsonl.
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("items")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Measurement:
        iv, seq, paired = d.get("interval"), d.get("sequential"), d.get("paired")
        return cls(**{**d, "interval": Interval(**iv) if iv else None,
                      "sequential": SequentialOutcome(**seq) if seq else None,
                      "paired": PairedOutcome(**paired) if paired else None})


@dataclass(frozen=True)
class Check:
    """One comparison inside a gate: `observed` (the bound that is compared) `op` `threshold`."""

    name: str
    observed: float
    op: Literal[">=", "<="]
    threshold: float
    unit: str
    compared: str  # what `observed` is, e.g. "Wilson lower bound (95%)"

    @property
    def passed(self) -> bool:
        return self.observed >= self.threshold if self.op == ">=" else self.observed <= self.threshold

    @property
    def margin(self) -> float:
        """Positive when passing: how far the observed bound is on the right side."""
        return self.observed - self.threshold if self.op == ">=" else self.threshold - self.observed

    def describe(self) -> str:
        mark = "ok" if self.passed else "FAIL"
        return f"{self.name}: {self.compared} {self.observed:.4g} {self.op} {self.threshold:.4g} {self.unit} [{mark}]"


@dataclass
class GateResult:
    candidate: str
    target: str
    role: str
    gate: str
    status: Status
    measurement: Measurement | None = None
    checks: list[Check] = field(default_factory=list)
    advice: str | None = None
    error: str | None = None
    items_file: str | None = None

    @property
    def pair(self) -> str:
        return f"{self.candidate}@{self.target}"

    def message(self) -> str:
        m = self.measurement
        head = f"{self.gate} gate {self.status.upper()} for {self.pair}"
        if self.error:
            return f"{head}: {self.error}"
        lines = [head]
        if m is not None:
            ci = ""
            if m.interval is not None:
                iv = m.interval
                ci = f", {iv.confidence:.0%} {iv.method} interval [{iv.low:.4f}, {iv.high:.4f}]"
            n = f", n={m.n}" if m.n is not None else ""
            lines.append(f"  {m.metric} = {m.value:.4f} {m.unit}{ci}{n} ({m.method}, {m.meter})")
            lines += [f"  note: {note}" for note in m.notes]
            if m.paired is not None:
                pc = m.paired
                lines.append(f"  vs baseline {pc.baseline}: loss {pc.loss:+.4f} [{pc.loss_lower:+.4f}, "
                             f"{pc.loss_upper:+.4f}] on {pc.n} paired items, {pc.regressions} regressions, "
                             f"{pc.improvements} improvements")
        lines += [f"  {c.describe()}" for c in self.checks]
        if self.advice:
            lines.append(f"  next (step 1): {self.advice}")
        return "\n".join(lines)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GateResult:
        """Rebuild a result sent by a pytest-xdist worker (items stay in the worker's items file)."""
        fields = {f for f in Check.__dataclass_fields__}
        return cls(
            candidate=d["candidate"], target=d["target"], role=d["role"], gate=d["gate"], status=d["status"],
            measurement=Measurement.from_json(d["measurement"]) if d.get("measurement") else None,
            checks=[Check(**{k: v for k, v in c.items() if k in fields}) for c in d.get("checks", [])],
            advice=d.get("advice"), error=d.get("error"), items_file=d.get("items_file"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "target": self.target,
            "role": self.role,
            "gate": self.gate,
            "status": self.status,
            "value": self.measurement.value if self.measurement else None,
            "unit": self.measurement.unit if self.measurement else None,
            "interval": asdict(self.measurement.interval) if self.measurement and self.measurement.interval else None,
            "n": self.measurement.n if self.measurement else None,
            "checks": [
                {**asdict(c), "passed": c.passed, "margin": c.margin} for c in self.checks
            ],
            "advice": self.advice,
            "error": self.error,
            "items_file": self.items_file,
            "measurement": self.measurement.to_json() if self.measurement else None,
        }


@dataclass(frozen=True)
class Judgement:
    """What a gate's judge returns: its checks (all must pass) and the step-1 advice shown when one fails."""

    checks: list[Check]
    advice: str | None = None


def judge(labels: dict[str, str], measurement: Measurement, judgement: Judgement) -> GateResult:
    """The gate result: pass when every check passes, with the advice only when it does not."""
    status: Status = "pass" if all(c.passed for c in judgement.checks) else "fail"
    return GateResult(
        **labels,  # type: ignore[arg-type]
        status=status,
        measurement=measurement,
        checks=judgement.checks,
        advice=None if status == "pass" else judgement.advice,
    )
