"""Generalization accuracy: the share of questions whose answer part contains a gold answer.

Fixed-n: the lower bound of a two-sided Wilson interval at the target's confidence must reach the minimum, so
a small sample cannot pass by luck. Sequential: rounds of questions until Wald's SPRT of `min_accuracy` against
`min_accuracy + delta` decides (the threshold is an input of that sampling plan). Exact match and accuracy by
complexity are reported beside it. Evidence: reports/items/<candidate>__<target>__accuracy.jsonl.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from edgeready.adapters.base import Adapter
from edgeready.advice import accuracy_advice, budget_advice, fallback_advice, shown_below
from edgeready.baseline import BaselineRun
from edgeready.candidates import Candidate
from edgeready.datasets.harness import LmEvalTaskSpec, TaskSource, dataset_label, load_task
from edgeready.datasets.sampling import stratified_sample
from edgeready.datasets.sources import DatasetSpec, load_questions
from edgeready.errors import ConfigError, MeasurementError
from edgeready.gates.base import Gate, RunResources, StashKey, register
from edgeready.gates.paired import (
    BaselineAnswers,
    baseline_answers,
    identical_outcome,
    paired_outcome,
    with_paired_check,
)
from edgeready.measurement import Check, Judgement, Measurement
from edgeready.prompts import PromptStyle, qa_request
from edgeready.records import QAItem, Response
from edgeready.schema import Pair, SequentialOptions, Target
from edgeready.scoring.qa import QAScore, score_response
from edgeready.sequential.base import AllOf, Decision, outcome, run_in_rounds
from edgeready.sequential.betting import BettingMeanTest
from edgeready.sequential.mixture import SequentialProportionTest
from edgeready.sequential.paired import check_plan, losses
from edgeready.sequential.sprt import BernoulliSPRT
from edgeready.stats import Interval, wilson, wilson_best_low


class AccuracyConfig(SequentialOptions):
    """`gates.accuracy`: questions from `dataset`, `sample_size` of them (or rounds up to `max_items` when
    sequential), greedy answers of at most `max_tokens`, and the minimum share correct."""

    # An edgeready source (countries-kb, webqsp) or an lm-eval task (edgeready/datasets/harness.py).
    dataset: Annotated[DatasetSpec | LmEvalTaskSpec, Field(discriminator="kind")]
    sample_size: int = Field(ge=1, description="Questions to ask; --limit overrides")
    seed: int = 0
    # The absolute check; optional when the target compares accuracy with a baseline (`baseline.margins`).
    min_accuracy: float | None = Field(default=None, gt=0, lt=1)
    max_tokens: int = Field(default=16, ge=1, le=512)
    # Sequences decoded together for this gate's questions (default: the profile's `parallel`). Short answers gain
    # nothing from batching (docs/PERFORMANCE.md), so a target can batch its hallucination gate's long samples
    # and ask questions one at a time. At most the profile's: the memory gate measures at the profile's setting.
    parallel: int | None = Field(default=None, ge=1, le=64)
    # sprt: Wald's test of min_accuracy against min_accuracy + delta (fewest items at those two points);
    # mixture: the beta-binomial confidence sequence (delta may be 0; more items near the minimum).
    test: Literal["sprt", "mixture"] = "sprt"

    supports_baseline: ClassVar[bool] = True

    def check_target(self, target: Target) -> None:
        paired = target.baseline is not None and "accuracy" in target.baseline.margins
        if self.min_accuracy is None and not paired:
            raise ValueError("gates.accuracy: give min_accuracy, a baseline margin (baseline.margins.accuracy), "
                             "or both")
        if self.parallel is not None and self.parallel > target.profile.parallel:
            raise ValueError(f"gates.accuracy.parallel {self.parallel} exceeds profile.parallel "
                             f"{target.profile.parallel}, the setting the memory gate measures: raise the profile's")

    def check_margin(self, margin: float) -> None:
        check_plan(margin, self.alpha, self.beta, self.cap, "a loss",
                   f"in {self.cap} items even if no answer differs from the baseline's")

    @model_validator(mode="after")
    def _reachable(self) -> AccuracyConfig:
        if self.min_accuracy is None:
            return self  # judged against its baseline only: the paired test's plan needs no check here
        if self.mode == "fixed":
            self.check_limit(self.sample_size)
            return self
        if self.delta + self.min_accuracy >= 1:
            raise ValueError(f"min_accuracy + delta ({self.min_accuracy} + {self.delta}) must stay below 1")
        if self.test == "sprt" and self.delta == 0:
            raise ValueError("delta: an SPRT needs an indifference margin > 0 (e.g. 0.05), or use test: mixture")
        self.check_limit(self.cap)
        if self.delta > 0:
            self._ensure_power()
        return self

    def _ensure_power(self) -> None:
        """The target promises that a model at min_accuracy + delta fails with probability <= beta. A budget
        that runs out before the test decides is a fail too, so check the promise at this budget, exactly."""
        from edgeready.sequential.sprt import budget_for_power, operating_characteristics

        rule, p1 = accuracy_test(self).rule(), self.min_accuracy + self.delta
        op = operating_characteristics(p1, rule, self.round_size, self.cap)
        if op.reject_prob > self.beta:
            enough = budget_for_power(rule, p1, self.beta, self.round_size, 2 * self.cap)
            raise ValueError(
                f"max_items {self.cap} is too small for power {1 - self.beta:g} at {p1:g}: a model at min_accuracy "
                f"+ delta would not pass in {op.reject_prob:.1%} of runs (the budget runs out first in "
                f"{op.undecided_prob:.1%}); raise max_items to about {enough or 'more than the 10,000-item limit'}, "
                "widen delta, or lower power")

    def check_limit(self, n: int) -> None:
        """Raise ValueError when no run of n items could pass, even with every answer correct."""
        if self.min_accuracy is None:
            return
        if self.mode == "fixed":
            best = wilson_best_low(n, self.confidence)
            if best < self.min_accuracy:
                raise ValueError(
                    f"min_accuracy {self.min_accuracy} is unreachable with {n} questions at confidence "
                    f"{self.confidence}: even {n}/{n} correct gives a Wilson lower bound of {best:.3f}; ask more "
                    "questions or lower the minimum")
            return
        if not accuracy_test(self).reachable(n):
            raise ValueError(f"min_accuracy {self.min_accuracy} is unreachable within {n} items: even all "
                             "correct would not pass the sequential test; raise max_items or lower the minimum")


def accuracy_test(cfg: AccuracyConfig) -> BernoulliSPRT | SequentialProportionTest:
    """The sequential test a block describes (its threshold and margin are the plan's inputs)."""
    assert cfg.min_accuracy is not None
    if cfg.test == "sprt":
        return BernoulliSPRT(threshold=cfg.min_accuracy, alpha=cfg.alpha, beta=cfg.beta, delta=cfg.delta)
    return SequentialProportionTest(threshold=cfg.min_accuracy, alpha=cfg.alpha, beta=cfg.beta, delta=cfg.delta)


def fixed_equivalent(cfg: AccuracyConfig) -> dict[str, Any] | None:
    """The smallest fixed-n exact binomial test with the block's error rates (None without a margin)."""
    from edgeready.sequential.sprt import fixed_n_design

    if cfg.delta <= 0 or cfg.min_accuracy is None:
        return None
    d = fixed_n_design(cfg.min_accuracy, cfg.delta, cfg.alpha, cfg.beta)
    return {"n": d.n, "k_min": d.k_min, "alpha": round(d.alpha, 5), "power": round(d.power, 5),
            "how": "exact binomial test at level alpha with power 1 - beta at min_accuracy + delta"}


# -- inputs shared with other gates ----------------------------------------------------------------
Questions = tuple[list[QAItem], dict[str, Any]]
_QUESTIONS = "accuracy.questions"


def questions(run: RunResources, pair: Pair) -> Questions:
    """The target's accuracy questions as the run samples them (seeded, stratified, capped by --limit), with
    provenance; loaded once per target. The latency, memory and energy gates ask the same questions."""
    cfg = pair.target.gates.get("accuracy")
    if not isinstance(cfg, AccuracyConfig):
        raise MeasurementError(f"target {pair.target.key} has no accuracy gate, whose questions this gate asks")

    def load() -> Questions:
        if isinstance(cfg.dataset, LmEvalTaskSpec):
            source = task_source(run, cfg.dataset)
            items, prov = source.items, {"dataset": dataset_label(cfg.dataset), **source.provenance}
        else:
            items, prov = load_questions(cfg.dataset, run.data_dir)
        n = run.limit if run.limit is not None else cfg.cap
        try:
            cfg.check_limit(min(n, len(items)))
        except ValueError as exc:
            raise ConfigError(f"--limit {n}: {exc}") from None
        # Stratified and interleaved: every prefix keeps the simple/complex mix, which a sequential gate needs.
        chosen = stratified_sample(items, n, cfg.seed)
        return chosen, {**prov, "population": len(items), "requested": n, "sampled": len(chosen)}

    return run.shared(StashKey[Questions](f"{_QUESTIONS}|{pair.target.key}|{run.limit}"), load)


def task_source(run: RunResources, spec: LmEvalTaskSpec) -> TaskSource:
    """The lm-eval task, loaded once per run (its requests are built for every document)."""
    key = StashKey[TaskSource](f"accuracy.lm-eval|{spec.model_dump_json()}")
    return run.shared(key, lambda: load_task(spec, run.data_dir))


def prompts_for(run: RunResources, pair: Pair, n: int) -> list[QAItem]:
    """The first n questions a gate asks: the accuracy gate's, or embedded ones for a target without one."""
    if pair.target.gates.get("accuracy") is not None:
        return questions(run, pair)[0][:n]
    from edgeready.datasets.countries import load_countries_qa

    return stratified_sample(load_countries_qa(), 32, 0)[:n]


def answers_key(pair: Pair) -> StashKey[list[Response]]:
    """Where the accuracy gate leaves its responses: an offload target's latency gate times the same ones."""
    return StashKey[list[Response]](f"accuracy.answers|{pair.id}")


def capped_note(provenance: dict[str, Any], what: str) -> list[str]:
    """Say so when the target asked for more items than its data has (never a silent smaller sample)."""
    requested, sampled = provenance.get("requested"), provenance.get("sampled")
    if isinstance(requested, int) and isinstance(sampled, int) and requested > sampled:
        return [f"{requested} {what} asked for, the data has {sampled}: all {sampled} used (capped)"]
    return []


# -- the gate -----------------------------------------------------------------------------------------
@dataclass
class AccuracyInputs:
    adapter: Adapter
    items: list[QAItem]
    prompt_style: PromptStyle
    provenance: dict[str, Any]
    answers: list[Response] = field(default_factory=list)  # filled by measure, read by other gates
    baseline: BaselineAnswers | None = None  # set when the target compares accuracy with a baseline
    source: TaskSource | None = None  # an lm-eval task: it builds the prompts and scores the answers


@dataclass
class _Answered:
    """One question as asked and scored, with the baseline's answer when there is one."""

    item: QAItem
    prompt: str | list[list[str]]
    response: Response
    score: QAScore
    baseline_text: str | None = None
    baseline_score: QAScore | None = None


@register
class Accuracy(Gate[AccuracyConfig, AccuracyInputs]):
    name = "accuracy"
    order = 1
    config = AccuracyConfig
    description = "generalization accuracy (question answering)"
    severity = "critical"

    def gather(self, run: RunResources, pair: Pair, cfg: AccuracyConfig) -> AccuracyInputs:
        items, prov = questions(run, pair)
        answers = run.shared(answers_key(pair), list)
        answers.clear()
        source = task_source(run, cfg.dataset) if isinstance(cfg.dataset, LmEvalTaskSpec) else None
        scored = source is not None and source.output_type != "generate_until"
        # The gate's own decoding setting, for the candidate and a baseline model alike (log-likelihoods are read
        # single-stream).
        decoded = pair.with_parallel(1 if scored else cfg.parallel or pair.target.profile.parallel)
        base = baseline_answers(run, decoded, self.name)
        if base is not None and isinstance(pair.baseline, BaselineRun):
            pair.baseline.check_settings(self.name, {"dataset": prov.get("dataset"), "seed": cfg.seed,
                                                     "max_tokens": cfg.max_tokens})
        if source is not None and base is not None and scored:
            # The paired test compares answers the baseline generates (or generated) for the same requests.
            raise ConfigError(f"target {pair.target.key}: lm-eval task {source.spec.task} is {source.output_type}; "
                              "a baseline is compared on generation tasks only (judge it on its own)")
        return AccuracyInputs(run.cached(decoded), items, pair.candidate.prompt_style,
                              {**prov, **run.provenance(pair)}, answers, base, source)

    def measure(self, inputs: AccuracyInputs, cfg: AccuracyConfig) -> Measurement:
        started = time.perf_counter()
        absolute = accuracy_test(cfg) if cfg.mode == "sequential" and cfg.min_accuracy is not None else None
        base = inputs.baseline
        same = base is not None and base.source == "same model"
        pair_test = base.test(cfg.alpha, cfg.beta) if base is not None and not same else None
        tests = [t for t in (absolute, pair_test) if t is not None]
        # Sequential: rounds until every test has decided (or one fails); fixed-n: all items, one look.
        stream = AllOf(tests) if cfg.mode == "sequential" and tests else None
        used, answered = _answer_in_rounds(inputs, cfg, stream, absolute is not None)
        records = _records(inputs, answered)
        n, k = len(records), sum(r["correct"] for r in records)
        interval, seq = wilson(k, n, cfg.confidence), None
        if absolute is not None:
            decision = absolute.decision if absolute.decision and absolute.decision.status != "continue" \
                else absolute.finish("the gate stopped when its paired test failed")
            # The always-valid bounds replace Wilson's: the gate looked at the data after every round.
            interval = Interval(low=decision.lower, high=decision.upper, confidence=cfg.confidence,
                                method="beta-binomial confidence sequence")
            seq = outcome(absolute, decision, used, len(inputs.items), cfg.round_size, fixed_equivalent(cfg))
        paired = None
        if base is not None and pair_test is not None:
            paired = paired_outcome(base, pair_test, _final(pair_test, answered, cfg), cfg.alpha, records,
                                    cfg.confidence)
        elif base is not None:
            paired = identical_outcome(base, cfg.alpha, n)
        return Measurement(
            gate=self.name, metric=_metric_name(inputs.source), value=k / n, unit="", n=n,
            interval=interval, method="measured", meter=_meter(inputs.source),
            provenance={**inputs.provenance, "adapter": inputs.adapter.describe(),
                        "prompt_style": inputs.prompt_style, "seed": cfg.seed, "max_tokens": cfg.max_tokens},
            details=_details(records, cfg, time.perf_counter() - started),
            sequential=seq, paired=paired,
            notes=capped_note(inputs.provenance, "questions"),
            items=[{k: v for k, v in r.items() if k != "cache"} for r in records],
        )

    def judge(self, m: Measurement, cfg: AccuracyConfig, subject: Candidate) -> Judgement:
        assert m.interval is not None
        fallbacks = m.details.get("fallbacks", 0)
        if fallbacks:
            # An offload deployment whose server did not answer was not measured as designed: its answers came
            # from the device, so the value is not the deployment's accuracy.
            check = Check("offload_path", fallbacks, "<=", 0, "requests", "answered by the device after the server "
                          "failed (fallbacks)")
            return Judgement([check], fallback_advice(m.details))
        absolute = self._absolute(m, cfg, subject) if cfg.min_accuracy is not None else None
        # AccuracyConfig.check_target: the absolute check, the paired one, or both are configured.
        return with_paired_check(absolute, m, "accuracy", subject.quantization)

    def _absolute(self, m: Measurement, cfg: AccuracyConfig, subject: Candidate) -> Judgement:
        assert m.interval is not None and cfg.min_accuracy is not None
        seq = m.sequential
        if seq is None:
            check = Check(name="accuracy", observed=m.interval.low, op=">=", threshold=cfg.min_accuracy, unit="",
                          compared=f"Wilson lower bound ({cfg.confidence:.0%})")
            return Judgement([check], accuracy_advice(m, check, subject.strategy, subject.quantization))
        test = accuracy_test(cfg)
        differs = seq.plan_differs(test.name, cfg.min_accuracy, cfg.delta, cfg.alpha, cfg.beta)
        if differs:
            raise MeasurementError(differs)
        # A sequential test decides by its e-value: the check compares the very float it decided by with the
        # very boundary, log(1/alpha). The interval beside it is for reading.
        evidence = (f"log likelihood ratio of accuracy {cfg.min_accuracy + cfg.delta:g} vs {cfg.min_accuracy:g}"
                    if cfg.test == "sprt" else f"log e-value against accuracy <= {cfg.min_accuracy:g}")
        check = Check(name="accuracy", observed=seq.log_evalue_pass, op=">=", threshold=seq.log_boundary_pass,
                      unit="", compared=f"{evidence} (boundary log(1/alpha))")
        if seq.stopped_by == "budget":
            return Judgement([check], budget_advice(seq))
        below = shown_below("accuracy", m.value, m.n, cfg.min_accuracy + cfg.delta, "minimum + indifference", seq)
        return Judgement([check], accuracy_advice(m, check, subject.strategy, subject.quantization, below))


def _metric_name(source: TaskSource | None) -> str:
    if source is None:
        return "accuracy (answer contains a gold answer)"
    return f"accuracy (lm-eval {source.spec.task}: {source.metric})"


def _meter(source: TaskSource | None) -> str:
    if source is None:
        return "contains-gold after normalization; answer part = up to the first newline"
    how = "greedy generation" if source.output_type == "generate_until" else "llama.cpp log-likelihoods"
    return (f"lm-eval {source.provenance['lm_eval']}'s task machinery: {how}, filter {source.filter!r}, "
            f"the task's process_results per item ({source.metric})")


def _answer_in_rounds(inputs: AccuracyInputs, cfg: AccuracyConfig, stream: AllOf | None,
                      with_absolute: bool) -> tuple[int, list[_Answered]]:
    """Ask the questions a round at a time (all at once when fixed-n), and the baseline the same ones."""
    source, base = inputs.source, inputs.baseline
    answered: list[_Answered] = []

    def score(item: QAItem, text: str) -> QAScore:
        return source.score(item, text) if source is not None else score_response(text, item.answers)

    def score_round(start: int, stop: int) -> list[tuple[float, ...]]:
        items = inputs.items[start:stop]
        if source is not None:
            prompts, batch = source.ask(inputs.adapter, items, cfg.max_tokens)
            # A generation task's requests, for the baseline to answer (gather refuses a baseline otherwise).
            reqs = source.requests(items, cfg.max_tokens) if base is not None else []
        else:
            reqs = [qa_request(item, cfg.max_tokens) for item in items]
            batch = inputs.adapter.generate(reqs)
            prompts = [r.prompt if inputs.prompt_style == "few-shot" else [list(m) for m in r.messages] for r in reqs]
        inputs.answers.extend(batch)
        theirs = base.texts(reqs, items, batch) if base is not None else [None] * len(batch)
        rows = []
        for item, prompt, resp, text in zip(items, prompts, batch, theirs, strict=True):
            mine = score(item, resp.text)
            a = _Answered(item, prompt, resp, mine, text, score(item, text) if text is not None else None)
            answered.append(a)
            rows.append(_row(a, with_absolute))
        return rows

    used, _ = run_in_rounds(stream, score_round, len(inputs.items), cfg.round_size, cfg.cap)
    return used, answered


def _row(a: _Answered, with_absolute: bool) -> tuple[float, ...]:
    """One item's scores for the tests of the stream: the absolute test's, then the paired test's."""
    mine = 1.0 if a.score.correct else 0.0
    row = (mine,) if with_absolute else ()
    if a.baseline_score is not None:
        row += tuple(losses([mine], [1.0 if a.baseline_score.correct else 0.0], higher_is_better=True))
    return row


def _final(test: BettingMeanTest, answered: list[_Answered], cfg: AccuracyConfig) -> Decision:
    """The paired test's decision: at the end of a fixed-n gate its one look, else where the rounds left it."""
    if test.decision is None:  # fixed-n: one look at every pair
        test.observe([_row(a, False)[0] for a in answered])
    decision = test.decision
    assert decision is not None
    if decision.status != "continue":
        return decision
    why = "sample_size reached" if cfg.mode == "fixed" else "the gate stopped when its absolute test failed"
    return test.finish(why)


def _records(inputs: AccuracyInputs, answered: list[_Answered]) -> list[dict]:
    """The evidence, one record per question asked: prompt, response, the part scored, gold, verdict; and the
    baseline's answer and whether the item flipped, when there is a baseline."""
    records = []
    for a in answered:
        resp, s = a.response, a.score
        rec = {
            "id": a.item.id,
            "complexity": a.item.complexity,
            "hops": a.item.hops,
            "question": a.item.question,
            "prompt": a.prompt,
            "response": resp.text,
            "answer_part": s.answer,
            "gold": list(a.item.answers),
            "correct": s.correct,
            "exact": s.exact,
            "score": 1.0 if s.correct else 0.0,
            "prompt_tokens": resp.prompt_tokens,
            "completion_tokens": resp.completion_tokens,
            "latency_s": round(resp.timings.total_s, 4),
            "served_by": resp.served_by,
            **({"fallback": True} if resp.meta.get("fallback") else {}),
            "cache": resp.meta.get("cache"),
            # A multiple-choice item's response is the likeliest choice; these are each choice's log P.
            **({"loglikelihoods": resp.meta["loglikelihoods"]} if "loglikelihoods" in resp.meta else {}),
        }
        if a.baseline_score is not None:
            rec["baseline_response"] = a.baseline_text
            rec["baseline_correct"] = a.baseline_score.correct
            if a.baseline_score.correct != s.correct:
                rec["flip"] = "regression" if a.baseline_score.correct else "improvement"
        records.append(rec)
    return records


def _details(records: list[dict], cfg: AccuracyConfig, wall_s: float) -> dict[str, Any]:
    n = len(records)
    return {
        "correct": sum(r["correct"] for r in records),
        "exact_match": sum(r["exact"] for r in records) / n,
        "by_complexity": _by_complexity(records, cfg.confidence),
        "wall_s": round(wall_s, 3),
        "completion_tokens": sum(r["completion_tokens"] for r in records),
        "prompt_tokens": sum(r["prompt_tokens"] for r in records),
        "cache_hits": sum(r["cache"] == "hit" for r in records),
        "fallbacks": sum(bool(r.get("fallback")) for r in records),
    }


def _by_complexity(records: list[dict], confidence: float) -> dict[str, Any]:
    by: dict[str, Any] = {}
    for cx in ("simple", "complex"):
        sub = [r for r in records if r["complexity"] == cx]
        if sub:
            ks = sum(r["correct"] for r in sub)
            ci = wilson(ks, len(sub), confidence)
            by[cx] = {"n": len(sub), "accuracy": ks / len(sub), "interval": [ci.low, ci.high],
                      "served_by_server": sum(r["served_by"] == "server" for r in sub)}
    return by
