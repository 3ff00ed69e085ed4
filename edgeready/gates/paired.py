"""What the paired gates share: where the baseline's answers come from, and the paired outcome.

A gate whose target has a `baseline:` block answers each item with the candidate and the baseline (same
question ids, prompts, seeds and settings) and judges the loss against the margin
(edgeready/sequential/paired.py). The baseline answers through its own adapter (behind the generation store,
so a CI run pays only for the new model), from an earlier run's evidence files (no model at all), or, when it
is the candidate itself (same sha256), from the candidate's own answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edgeready.adapters.base import Adapter
from edgeready.advice import paired_advice
from edgeready.baseline import BaselineRun
from edgeready.candidates import Candidate
from edgeready.errors import ConfigError, MeasurementError
from edgeready.gates.base import RunResources
from edgeready.measurement import FLIPS_KEPT, Check, Judgement, Measurement, PairedOutcome
from edgeready.records import GenerationRequest, QAItem, Response
from edgeready.schema import Pair
from edgeready.sequential.base import Decision, boundary, evalue_text
from edgeready.sequential.betting import BettingMeanTest
from edgeready.sequential.paired import difference_bounds, mcnemar_exact, newcombe_paired, paired_test


@dataclass
class BaselineAnswers:
    """The baseline's side of the pairs. Exactly one of `adapter` and `records` is set, or neither when the
    baseline is the candidate itself."""

    name: str
    source: Literal["model", "reports", "same model"]
    margin: float
    adapter: Adapter | None = None
    records: dict[str, dict[str, Any]] | None = None
    power_at: float = 0.0  # target `baseline.power_at`: where beta is controlled, as a share of the margin

    def test(self, alpha: float, beta: float) -> BettingMeanTest:
        """The paired test of this baseline's plan (edgeready/sequential/paired.py)."""
        return paired_test(self.margin, alpha, beta, self.power_at)

    def texts(self, requests: Sequence[GenerationRequest], items: Sequence[QAItem],
              own: Sequence[Response]) -> list[str]:
        """The baseline's answer to each request: generated, read from its run, or the candidate's own."""
        if self.source == "same model":
            return [r.text for r in own]
        if self.adapter is not None:
            return [r.text for r in self.adapter.generate(list(requests))]
        assert self.records is not None
        return [self._recorded(req, item) for req, item in zip(requests, items, strict=True)]

    def recorded(self, item_id: str, prompt: str) -> dict[str, Any]:
        """The baseline run's record of an item asked with `prompt` (a plain-text prompt)."""
        rec = self.records.get(item_id) if self.records is not None else None
        if rec is None:
            raise MeasurementError(f"baseline {self.name} has no record of {item_id!r} (its run may have stopped "
                                   "earlier or used other items): give a run that covered them all")
        if rec.get("prompt") != prompt:
            raise ConfigError(f"baseline {self.name}: {item_id!r} was asked with another prompt than this run's")
        return rec

    def _recorded(self, req: GenerationRequest, item: QAItem) -> str:
        rec = self.records.get(item.id) if self.records is not None else None
        if rec is None:
            raise MeasurementError(f"baseline {self.name} has no answer for item {item.id!r} (its run may have "
                                   "stopped earlier or asked other questions): give a run that answered them all")
        asked = rec.get("prompt")
        ours = req.prompt if isinstance(asked, str) else [list(m) for m in req.messages]
        if asked != ours or rec.get("gold") != list(item.answers):
            what = "prompt" if asked != ours else "gold answers"
            raise ConfigError(f"baseline {self.name}: item {item.id!r} was asked with another {what} than this "
                              "run's; a baseline run must use the same dataset, prompts and settings")
        return str(rec.get("response", ""))


def baseline_answers(run: RunResources, pair: Pair, gate: str) -> BaselineAnswers | None:
    """The pair's baseline for `gate`, or None when its target compares this gate with none."""
    spec = pair.target.baseline
    margin = spec.margins.get(gate) if spec is not None else None
    if margin is None:
        return None
    base = pair.baseline
    if base is None:  # the plugin refuses this before any model loads; a plain-Python caller gets it here
        raise ConfigError(f"target {pair.target.key} compares {gate} with a baseline but none was given "
                          "(baseline.candidate in the target, or --baseline)")
    assert spec is not None
    if isinstance(base, BaselineRun):
        return BaselineAnswers(base.name, "reports", margin, records=base.records(gate), power_at=spec.power_at)
    if same_model(run, pair.candidate, base):
        return BaselineAnswers(base.name, "same model", margin, power_at=spec.power_at)
    return BaselineAnswers(base.name, "model", margin, adapter=run.cached(Pair(base, pair.target)),
                           power_at=spec.power_at)


def same_model(run: RunResources, candidate: Candidate, base: Candidate, *, prompts: bool = True) -> bool:
    """Whether the baseline is the candidate itself: the same GGUF bytes (and, for what depends on the texts,
    `prompts`, the same prompt style); endpoints by name."""
    if candidate.format != "gguf" or base.format != "gguf":
        return candidate.name == base.name
    same_bytes = run.model(candidate).sha256 == run.model(base).sha256
    return same_bytes and (not prompts or candidate.prompt_style == base.prompt_style)


def paired_outcome(base: BaselineAnswers, test: BettingMeanTest, decision: Decision, alpha: float,
                   records: list[dict[str, Any]], confidence: float) -> PairedOutcome:
    """The paired evidence of binary scores: loss, interval, decision, discordant table and flipped items."""
    pairs = [(bool(r["correct"]), bool(r["baseline_correct"])) for r in records if "baseline_correct" in r]
    both = sum(c and b for c, b in pairs)
    cand_only = sum(c and not b for c, b in pairs)
    base_only = sum(b and not c for c, b in pairs)
    neither = len(pairs) - both - cand_only - base_only
    low, high = difference_bounds(test)
    newcombe = newcombe_paired(both, cand_only, base_only, neither, confidence) if pairs else (0.0, 0.0)
    flips = [_flip(r) for r in records if r.get("flip")]
    return PairedOutcome(
        baseline=base.name, source=base.source, margin=base.margin, alpha=alpha, n=len(pairs),
        loss=(base_only - cand_only) / len(pairs) if pairs else 0.0, loss_lower=low, loss_upper=high,
        decision="pass" if decision.status == "pass" else "fail",
        stopped_by="budget" if decision.by_budget else f"{decision.status} boundary",
        log_evalue_pass=decision.log_evalue_pass, log_boundary_pass=boundary(test.alpha),
        reason=_reason(decision, base, test), power_at=base.power_at,
        table={"both_right": both, "candidate_only": cand_only, "baseline_only": base_only, "neither": neither,
               "mcnemar_exact_p": mcnemar_exact(base_only, cand_only),
               "newcombe_difference": list(newcombe), "newcombe_confidence": confidence},
        regressions=sum(f["flip"] == "regression" for f in flips),
        improvements=sum(f["flip"] == "improvement" for f in flips),
        flips=[f for f in flips if f["flip"] == "regression"][:FLIPS_KEPT]
        + [f for f in flips if f["flip"] == "improvement"][:FLIPS_KEPT],
    )


def _reason(decision: Decision, base: BaselineAnswers, test: BettingMeanTest) -> str:
    """The decision in the paired test's own words (the loss), not those of the mean test it runs on."""
    assert test.beta is not None
    margin = base.margin
    n, e_pass, e_fail = decision.n, evalue_text(decision.log_evalue_pass), evalue_text(decision.log_evalue_fail)
    if decision.status == "pass":
        return (f"the loss was shown below the margin {margin:g} after {n} pairs (e-value {e_pass} >= 1/alpha = "
                f"{1 / test.alpha:g})")
    if decision.by_budget:
        return (f"after {n} pairs the loss was not shown below the margin {margin:g} (e-value {e_pass} < 1/alpha = "
                f"{1 / test.alpha:g}): not shown non-inferior")
    # The fail side tests "loss <= power_at x margin": with power_at 0 it stops at the first evidence of any
    # loss, so a candidate that lost less than the margin can fail too; it was not shown non-inferior.
    floor = base.power_at * margin
    worse = "the candidate did worse than the baseline" if floor == 0 else f"the loss was shown above {floor:g}"
    return (f"{worse} after {n} pairs (e-value {e_fail} >= 1/beta = {1 / test.beta:g}): non-inferiority within "
            f"{margin:g} was not shown (the test stops at evidence of a loss above power_at x margin = {floor:g})")


def identical_outcome(base: BaselineAnswers, alpha: float, n: int) -> PairedOutcome:
    """The baseline is the candidate itself (same sha256 and prompt style, deterministic decoding): every
    answer is the same, so the loss is exactly 0; no test is needed, and the outcome says why."""
    return PairedOutcome(
        baseline=base.name, source=base.source, margin=base.margin, alpha=alpha, n=n, loss=0.0, loss_lower=0.0,
        loss_upper=0.0, decision="pass", stopped_by="identical", log_evalue_pass=0.0, power_at=base.power_at,
        log_boundary_pass=boundary(alpha),
        reason="the baseline is the candidate itself (same sha256 and prompt style): every answer is the same "
               "and the loss is exactly 0",
        table={"both_right": None, "candidate_only": 0, "baseline_only": 0, "neither": None,
               "mcnemar_exact_p": 1.0, "newcombe_difference": [0.0, 0.0], "newcombe_confidence": None})


def scored_outcome(base: BaselineAnswers, test: BettingMeanTest, decision: Decision, alpha: float,
                   pairs: list[tuple[dict[str, Any], float]]) -> PairedOutcome:
    """The paired evidence of scores in [0, 1] where lower is better (a rate): each pair is the candidate's
    record and the baseline's score; flips are the concepts whose score moved most, each way."""
    low, high = difference_bounds(test)
    moved = sorted(((rec["score"] - theirs, rec, theirs) for rec, theirs in pairs), key=lambda x: -x[0])
    worse = [_moved(rec, theirs, "regression") for d, rec, theirs in moved if d > 0][:FLIPS_KEPT]
    better = [_moved(rec, theirs, "improvement") for d, rec, theirs in reversed(moved) if d < 0][:FLIPS_KEPT]
    return PairedOutcome(
        baseline=base.name, source=base.source, margin=base.margin, alpha=alpha, n=len(pairs),
        loss=sum(d for d, _, _ in moved) / len(pairs) if pairs else 0.0, loss_lower=low, loss_upper=high,
        decision="pass" if decision.status == "pass" else "fail",
        stopped_by="budget" if decision.by_budget else f"{decision.status} boundary",
        log_evalue_pass=decision.log_evalue_pass, log_boundary_pass=boundary(test.alpha),
        reason=_reason(decision, base, test), power_at=base.power_at, regressions=sum(d > 0 for d, _, _ in moved),
        improvements=sum(d < 0 for d, _, _ in moved), flips=worse + better)


def _moved(record: dict[str, Any], theirs: float, direction: str) -> dict[str, Any]:
    return {"id": record["id"], "flip": direction, "score": record["score"], "baseline_score": theirs,
            "response": record.get("passage"), "baseline_response": record.get("baseline_passage")}


def with_paired_check(judged: Judgement | None, m: Measurement, metric: str,
                      quantization: str | None) -> Judgement:
    """`judged` (the gate's absolute checks, if any) with the non-inferiority check added when the measurement
    was paired; the advice of a failed paired check comes first."""
    pc = m.paired
    if pc is None:
        assert judged is not None
        return judged
    if pc.source == "same model":
        check = Check("non_inferiority", pc.loss_upper, "<=", pc.margin, "",
                      f"loss against {pc.baseline}, the candidate itself (same sha256): exactly 0")
    else:
        check = Check("non_inferiority", pc.log_evalue_pass, ">=", pc.log_boundary_pass, "",
                      f"log e-value that the {metric} lost against {pc.baseline} is below {pc.margin:g} "
                      "(boundary log(1/alpha))")
    checks = ([] if judged is None else judged.checks) + [check]
    advice = paired_advice(pc, metric, quantization) if not check.passed else (judged.advice if judged else None)
    return Judgement(checks, advice)


def _flip(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "flip", "complexity", "question", "gold", "response", "baseline_response")
    return {k: record.get(k) for k in keys if k in record}
