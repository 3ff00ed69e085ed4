"""Hallucination rate: SelfCheckGPT over passages the model writes about real entities.

Protocol (Manakul et al., EMNLP 2023): for each concept the prompt "This is a passage from Wikipedia
about {concept}:"; one main passage by greedy decoding and N stochastic samples (temperature 1.0,
seeds seed+1..seed+N); the main passage split into sentences with pysbd; every sentence scored in
[0, 1] against the N samples by the target's scorer (1 = likely hallucinated: the samples do not
back it up). With the default scorer, `calibrated`, a sentence's score is the estimated probability that it is
not factual, so the rate is the expected share of non-factual sentences and `max_rate` bounds that share
(edgeready/selfcheck/calibrated.py says what the probability is calibrated against).
Only sentences that state something are scored: a fragment with fewer than three words ("1.", "(i... .")
claims nothing to check, and a passage with no such sentence counts as one unsupported sentence (score 1),
so a model that writes nothing checkable cannot pass by saying nothing (docs/HALLUCINATION.md).
Fixed-n: rate = mean sentence score over all sentences of all passages, and the gate passes
only when the upper bound of a bootstrap interval over passages is within the maximum. Sequential: a
betting e-process over passage scores decides (the maximum is an input of that sampling plan).
Evidence: reports/items/<candidate>__<target>__hallucination.jsonl (passages, samples, sentence scores).
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from edgeready.adapters.base import Adapter
from edgeready.advice import hallucination_advice
from edgeready.cache import GenerationStore
from edgeready.candidates import Candidate
from edgeready.datasets.sources import ConceptSpec, load_concepts
from edgeready.errors import MeasurementError
from edgeready.gates.accuracy import capped_note
from edgeready.gates.base import Gate, RunResources, register
from edgeready.gates.paired import (
    BaselineAnswers,
    baseline_answers,
    identical_outcome,
    scored_outcome,
    with_paired_check,
)
from edgeready.measurement import Check, Judgement, Measurement, PairedOutcome, SequentialOutcome
from edgeready.records import GenerationRequest
from edgeready.schema import Pair, SequentialOptions
from edgeready.selfcheck import SentenceScorer, make_scorer, scorer_options
from edgeready.selfcheck.cached import CachedScorer, scorer_identity
from edgeready.sequential.base import AllOf, Decision, outcome, run_in_rounds
from edgeready.sequential.betting import BettingMeanTest
from edgeready.sequential.paired import check_plan, losses
from edgeready.stats import Interval

PROMPT = "This is a passage from Wikipedia about {concept}:"
_TAG = re.compile(r"<[^>]{1,40}>")
_TERMINAL = (".", "!", "?", '"', "”", "'", ")")


class HallucinationConfig(SequentialOptions):
    """`gates.hallucination`: `sample_size` concepts (or rounds up to `max_items` when sequential), N = `samples`
    stochastic passages each, the sentence scorer, and the maximum rate."""

    concepts: ConceptSpec
    sample_size: int = Field(ge=2, description="Concepts to write about; --limit overrides")
    seed: int = 0
    samples: int = Field(default=4, ge=1, le=64, description="Stochastic samples per concept (SelfCheck's N)")
    max_tokens: int = Field(default=80, ge=8, le=1024)
    scorer: Literal["calibrated", "nli", "ngram", "embedding"] = Field(
        default="calibrated", description="calibrated: each sentence's estimated probability of not being factual, "
        "so the rate is the expected share of non-factual sentences")
    scorer_options: dict[str, str | int | float] = Field(default_factory=dict)
    share_above: float = Field(default=0.5, gt=0, lt=1,
                               description="reported only (gates nothing): the share of sentences scoring above it")
    max_rate: float = Field(gt=0, le=1)
    bootstrap_resamples: int = Field(default=2000, ge=100)
    # A concept costs 1 + samples generations, so look more often than the accuracy gate does.
    round_size: int = Field(default=5, ge=1, description="sequential: concepts scored between looks")

    @model_validator(mode="after")
    def _scorer_options(self) -> HallucinationConfig:
        takes = scorer_options(self.scorer)
        unknown = sorted(set(self.scorer_options) - set(takes))
        if unknown:
            raise ValueError(f"scorer_options.{unknown[0]}: not an option of the {self.scorer} scorer (it takes "
                             f"{', '.join(takes)})")
        if self.scorer == "calibrated" and "calibration" in self.scorer_options:
            from edgeready.selfcheck.calibrated import load_calibration

            load_calibration(str(self.scorer_options["calibration"]))  # a bad file names itself and its key
        return self

    @model_validator(mode="after")
    def _reachable(self) -> HallucinationConfig:
        if self.mode == "fixed":
            return self
        if not 0 < self.delta < self.max_rate:
            raise ValueError(f"delta must be within (0, max_rate = {self.max_rate}) for the sequential test")
        if self.max_rate >= 1:
            raise ValueError("max_rate 1 cannot be exceeded: use mode: fixed or a lower maximum")
        self.check_limit(self.cap)
        return self

    supports_baseline: ClassVar[bool] = True

    def check_margin(self, margin: float) -> None:
        check_plan(margin, self.alpha, self.beta, self.cap, "a rate increase",
                   f"with {self.cap} concepts even if every passage scores as the baseline's")

    def check_limit(self, n: int) -> None:
        """Raise ValueError when no sequential run of n concepts could pass, even with every score 0."""
        if self.mode == "sequential" and not hallucination_test(self).reachable(n):
            raise ValueError(f"max_rate {self.max_rate} cannot be shown within {n} concepts even if every "
                             "sentence scored 0; raise max_items or the maximum")


def hallucination_test(cfg: HallucinationConfig) -> BettingMeanTest:
    return BettingMeanTest(threshold=cfg.max_rate, alpha=cfg.alpha, beta=cfg.beta, delta=cfg.delta)


def fixed_equivalent(cfg: HallucinationConfig, sd: float | None) -> dict[str, Any] | None:
    """A fixed-n one-sided z-test with the block's error rates, sized with the observed spread of the passage
    scores: an estimate (the spread is measured, the normal approximation assumed)."""
    import math

    from scipy.stats import norm

    if sd is None or not math.isfinite(sd) or sd <= 0:
        return None
    z = norm.isf(cfg.alpha) + norm.isf(cfg.beta)
    return {"n": math.ceil((z * sd / cfg.delta) ** 2), "sd": round(sd, 4),
            "how": "one-sided z-test at level alpha with power 1 - beta at max_rate - delta, "
                   "sized with the observed standard deviation of passage scores (estimated)"}


def choose_concepts(concepts: list[str], n: int, seed: int) -> list[str]:
    unique = sorted(set(concepts))
    return random.Random(seed).sample(unique, min(n, len(unique)))


def request_for(concept: str, cfg: HallucinationConfig, seed: int, temperature: float) -> GenerationRequest:
    # Plain text: a chat model's adapter sends it as the one user turn (prompts.form_for).
    return GenerationRequest(prompt=PROMPT.format(concept=concept), max_tokens=cfg.max_tokens,
                             temperature=temperature, seed=seed)


def clean_passage(text: str) -> str:
    """Drop markup a base model imitates from web text (e.g. '<blockquote>') and outer whitespace."""
    return _TAG.sub(" ", text).strip()


_WORD = re.compile(r"[^\W\d_]{2,}")
# A passage with no claim is scored as one sentence that nothing supports.
NO_CLAIM_SCORE = 1.0


def makes_claim(sentence: str) -> bool:
    """At least three words of two letters or more. Degenerate text ("1. 1. (i... .", "-''——— -—") splits
    into fragments that state nothing; scoring them as sentences lets gibberish that repeats itself in every
    sample look supported (a 4-block prune of Gemma scored 0.33 that way). No labelled WikiBio sentence has
    fewer than three such words."""
    return len(_WORD.findall(sentence)) >= 3


def sentences_of(passage: str) -> list[str]:
    """pysbd sentences; an unfinished last sentence (cut by max_tokens) is dropped when others exist,
    since scoring a fragment measures the token limit, not the model."""
    from edgeready.selfcheck.embedding import split_sentences

    sents = split_sentences(passage)
    if len(sents) > 1 and not sents[-1].rstrip().endswith(_TERMINAL):
        sents = sents[:-1]
    return sents


@dataclass
class HallucinationInputs:
    adapter: Adapter
    concepts: list[str]
    provenance: dict[str, Any]
    threads: int
    store: GenerationStore | None  # sentence scores are stored too, so a re-run loads no scorer model
    baseline: BaselineAnswers | None = None  # set when the target compares the rate with a baseline


@dataclass
class _Passages:
    """What the rounds produced: one record per concept, and where the time went."""

    records: list[dict[str, Any]] = field(default_factory=list)
    generation_s: float = 0.0
    scoring_s: float = 0.0
    completion_tokens: int = 0


@register
class Hallucination(Gate[HallucinationConfig, HallucinationInputs]):
    name = "hallucination"
    order = 2
    config = HallucinationConfig
    description = "hallucination rate (SelfCheckGPT)"

    def gather(self, run: RunResources, pair: Pair, cfg: HallucinationConfig) -> HallucinationInputs:
        concepts, prov = load_concepts(cfg.concepts, run.data_dir)
        n = run.limit or cfg.cap
        chosen = choose_concepts(concepts, n, cfg.seed)
        base = baseline_answers(run, pair, self.name)
        # Sentence scores depend only on the texts (they are in the key), so they are stored for every role.
        return HallucinationInputs(run.cached(pair), chosen, {
            **prov, "population": len(concepts), **({"requested": n, "sampled": len(chosen)} if n > len(chosen)
                                                    else {}), **run.provenance(pair)},
            pair.target.profile.threads, run.store(), base)

    def measure(self, inputs: HallucinationInputs, cfg: HallucinationConfig) -> Measurement:
        scorer = _scorer(cfg, inputs.threads, inputs.store)
        evaluated0 = inputs.adapter.stats().prompt_tokens_evaluated
        test = hallucination_test(cfg) if cfg.mode == "sequential" else None
        base = inputs.baseline
        pair_test = base.test(cfg.alpha, cfg.beta) if base and base.source != "same model" else None
        tests = [t for t in (test, pair_test) if t is not None]
        stream = AllOf(tests) if cfg.mode == "sequential" and tests else None
        out, theirs = _Passages(), _Passages()
        used, _ = run_in_rounds(stream, lambda a, b: _round(inputs, cfg, scorer, (out, theirs), a, b, test is not None),
                                len(inputs.concepts), cfg.round_size, cfg.cap)
        decision = None if test is None else (test.decision if test.decision and test.decision.status != "continue"
                                              else test.finish("the gate stopped when its paired test failed"))
        scored = out.records
        if not scored:
            raise MeasurementError("no concept was written about; nothing to score")
        value, interval, statistic, seq = _estimate(scored, cfg, test, decision, used, len(inputs.concepts))
        all_scores = [s["score"] for r in scored for s in r["sentences"]]
        rate = _sentence_rate(scored)
        worst = sorted(((s["score"], r["id"], s["text"]) for r in scored for s in r["sentences"]), reverse=True)[:10]
        stats = inputs.adapter.stats()
        evaluated1 = stats.prompt_tokens_evaluated
        level = statistic.split(" ")[0]
        return Measurement(
            gate=self.name, metric=(f"expected share of non-factual sentences (SelfCheck-calibrated, {level})"
                                    if cfg.scorer == "calibrated" else
                                    f"hallucination rate (SelfCheck-{cfg.scorer}, {level})"),
            value=value, unit="", n=len(scored), interval=interval, method="measured",
            meter=f"SelfCheckGPT-{cfg.scorer} against {cfg.samples} samples at temperature 1.0",
            provenance={**inputs.provenance, "adapter": inputs.adapter.describe(), "scorer": cfg.scorer,
                        "scorer_options": cfg.scorer_options, "samples": cfg.samples, "seed": cfg.seed,
                        **_calibration(scorer)},
            details={
                "statistic": statistic,
                "sentence_rate": rate,
                "passage_rate": float(np.mean([r["score"] for r in scored])),
                "sentences": len(all_scores),
                "passages_scored": len(scored),
                "passages_without_claim": sum(1 for r in scored if not r["sentences"]),
                "no_claim_score": NO_CLAIM_SCORE,
                "share_above": cfg.share_above,
                "share_of_sentences_above": sum(v > cfg.share_above for v in all_scores) / len(all_scores),
                "per_passage": {r["id"]: r["score"] for r in out.records},
                "worst_sentences": [{"score": s, "concept": c, "text": t} for s, c, t in worst],
                "generation_s": round(out.generation_s, 3),
                "scoring_s": round(out.scoring_s, 3),
                "completion_tokens": out.completion_tokens,
                "prompt_tokens_evaluated": (evaluated1 - (evaluated0 or 0) if evaluated1 is not None else None),
                "cache_hits": stats.cache_hits,
                "score_cache_hits": scorer.hits if isinstance(scorer, CachedScorer) else None,
                "interval_note": (f"percentile bootstrap over passages, {cfg.bootstrap_resamples} resamples"
                                  if test is None else "always-valid: betting e-processes (Waudby-Smith & Ramdas)"),
            },
            sequential=seq, paired=_paired(base, pair_test, scored, cfg),
            notes=capped_note(inputs.provenance, "concepts"),
            items=out.records,
        )

    def judge(self, m: Measurement, cfg: HallucinationConfig, subject: Candidate) -> Judgement:
        assert m.interval is not None
        seq = m.sequential
        if seq is None:
            check = Check("hallucination_rate", m.interval.high, "<=", cfg.max_rate, "",
                          f"bootstrap upper bound ({cfg.confidence:.0%})")
        else:
            test = hallucination_test(cfg)
            differs = seq.plan_differs(test.name, cfg.max_rate, cfg.delta, cfg.alpha, cfg.beta)
            if differs:
                raise MeasurementError(differs)
            # The e-value the test decided by, against the boundary it used (see the accuracy gate).
            check = Check("hallucination_rate", seq.log_evalue_pass, ">=", seq.log_boundary_pass, "",
                          f"log e-value that the passage-level rate is below {cfg.max_rate:g} "
                          "(boundary log(1/alpha))")
        judged = Judgement([check], hallucination_advice(m, cfg.max_rate, subject.quantization, seq))
        return with_paired_check(judged, m, "hallucination rate", subject.quantization)


def _estimate(scored: list[dict[str, Any]], cfg: HallucinationConfig, test: BettingMeanTest | None,
              decision: Decision | None, used: int,
              budget: int) -> tuple[float, Interval, str, SequentialOutcome | None]:
    """The rate, its interval, which statistic it is, and the sequential outcome (None when fixed-n)."""
    passage_scores = np.array([r["score"] for r in scored])
    if test is not None and decision is not None:
        # The sequential test is about passages (the independent units, each scored in [0, 1]): its rate is
        # SelfCheckGPT's passage-level score, the mean over passages of their mean sentence score.
        interval = Interval(low=decision.lower, high=decision.upper, confidence=cfg.confidence,
                            method="betting confidence sequence (passage level)")
        sd = float(passage_scores.std(ddof=1)) if len(passage_scores) > 1 else None
        seq = outcome(test, decision, used, budget, cfg.round_size, fixed_equivalent(cfg, sd))
        return (float(passage_scores.mean()), interval, "passage-level (mean over passages of the mean sentence "
                "score)", seq)
    sums, counts = _sums_counts(scored)
    interval = _bootstrap(sums, counts, cfg.confidence, cfg.bootstrap_resamples, cfg.seed)
    return _sentence_rate(scored), interval, "sentence-level (mean over all sentences)", None


def _sums_counts(scored: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Per passage: the sum of its sentence scores and its number of sentences (a passage without a claim: one
    sentence at NO_CLAIM_SCORE)."""
    return (np.array([sum(s["score"] for s in r["sentences"]) if r["sentences"] else NO_CLAIM_SCORE
                      for r in scored]),
            np.array([len(r["sentences"]) or 1 for r in scored]))


def _sentence_rate(scored: list[dict[str, Any]]) -> float:
    sums, counts = _sums_counts(scored)
    return float(sums.sum() / counts.sum())


def _scorer(cfg: HallucinationConfig, threads: int, store: GenerationStore | None) -> SentenceScorer:
    """The block's scorer, checked before anything is generated (ScorerUnavailable makes the gate an error).
    With a store, the full load waits for the first passage not scored before; its cheap preflight runs now."""
    # torch's threads follow the profile (set when the scorer loads; a scorer_options value wins).
    options = cfg.scorer_options if cfg.scorer == "ngram" else {"threads": threads, **cfg.scorer_options}
    scorer = make_scorer(cfg.scorer, **options)
    if store is None:
        scorer.load()
        return scorer
    scorer.preflight()
    return CachedScorer(scorer, store, scorer_identity(scorer, cfg.scorer_options))


def _calibration(scorer: SentenceScorer) -> dict[str, Any]:
    """Where a calibrated scorer's probabilities come from (its file, fit and cross-validated figures)."""
    from edgeready.selfcheck.calibrated import CalibratedScorer

    inner = scorer.scorer if isinstance(scorer, CachedScorer) else scorer
    if not isinstance(inner, CalibratedScorer):
        return {}
    keep = ("fitted", "data", "data_sha256", "sentences", "evidence", "cross_validated")
    return {"calibration": {"file": str(inner.calibration_path),
                            **{k: v for k, v in inner.provenance.items() if k in keep}}}


def _round(inputs: HallucinationInputs, cfg: HallucinationConfig, scorer: SentenceScorer,
           outs: tuple[_Passages, _Passages], start: int, stop: int, with_absolute: bool) -> list[Any]:
    """One round: for each concept a greedy passage and N samples, the passage's sentences scored against them;
    the baseline's passage too when there is one. A row per concept for the stream's tests."""
    out, theirs = outs
    rows: list[Any] = []
    concepts = inputs.concepts[start:stop]
    records = _passages(inputs.adapter, concepts, cfg, scorer, out)
    base = inputs.baseline
    generated = (_passages(base.adapter, concepts, cfg, scorer, theirs) if base is not None and base.adapter
                 is not None and base.source == "model" else [None] * len(concepts))
    for concept, record, got in zip(concepts, records, generated, strict=True):
        out.records.append(record)
        if base is not None:
            _baseline_passage(base, record, concept, got)
        row = (record["score"],) if with_absolute else ()
        if "baseline_score" in record and inputs.baseline is not None and inputs.baseline.source != "same model":
            row += tuple(losses([record["score"]], [record["baseline_score"]], higher_is_better=False))
        rows.append(row)
    return rows


def _baseline_passage(base: BaselineAnswers, record: dict[str, Any], concept: str,
                      generated: dict[str, Any] | None) -> None:
    """The baseline's passage score for the concept, on the record: `generated` and scored alike (by
    _passages), read from its run, or the candidate's own (the same model). A baseline passage with no
    sentence counts as agreeing."""
    if base.source == "same model":
        got: dict[str, Any] = {"score": record["score"], "passage": record["passage"]}
    elif generated is not None:
        got = generated
    else:
        got = base.recorded(concept, PROMPT.format(concept=concept))
    score = got.get("score")
    record["baseline_passage"] = got.get("passage")
    record["baseline_score"] = float(score) if isinstance(score, int | float) else record["score"]
    if not isinstance(score, int | float):
        record["baseline_passage_empty"] = True


def _paired(base: BaselineAnswers | None, test: BettingMeanTest | None, scored: list[dict[str, Any]],
            cfg: HallucinationConfig) -> PairedOutcome | None:
    if base is None:
        return None
    if test is None:  # the baseline is the candidate itself
        return identical_outcome(base, cfg.alpha, len(scored))
    pairs = [(r, float(r["baseline_score"])) for r in scored if "baseline_score" in r]
    if test.decision is None:  # fixed-n: one look at every pair
        test.observe(losses([r["score"] for r, _ in pairs], [b for _, b in pairs], higher_is_better=False))
    decision = test.decision
    assert decision is not None
    if decision.status == "continue":
        decision = test.finish("sample_size reached" if cfg.mode == "fixed" else "the gate stopped")
    return scored_outcome(base, test, decision, cfg.alpha, pairs)


def _passages(adapter: Adapter, concepts: list[str], cfg: HallucinationConfig, scorer: SentenceScorer,
              out: _Passages) -> list[dict[str, Any]]:
    """Each concept: a greedy passage and N samples from `adapter`, its sentences scored against the samples.
    The round's requests go in one call, so a batched device adapter (profile `parallel`) keeps its slots full
    across concepts. Each request keeps its own seeded sampler, and its text depends on it and `parallel` alone,
    not on what came along (adapters/llama_cpp_batch.py, "Fixed rows")."""
    per = cfg.samples + 1
    reqs = [r for concept in concepts for r in [request_for(concept, cfg, cfg.seed, 0.0)] + [
        request_for(concept, cfg, cfg.seed + i, 1.0) for i in range(1, per)]]
    t0 = time.perf_counter()
    answers = adapter.generate(reqs)
    out.generation_s += time.perf_counter() - t0
    out.completion_tokens += sum(a.completion_tokens for a in answers)
    records = []
    for k, concept in enumerate(concepts):
        main, *samples = answers[k * per:(k + 1) * per]
        passage = clean_passage(main.text)
        evidence = [clean_passage(s.text) for s in samples]
        split = sentences_of(passage)
        claims = [makes_claim(s) for s in split]
        sents = [s for s, claim in zip(split, claims, strict=True) if claim]
        t1 = time.perf_counter()
        scores = scorer.score(sents, evidence) if sents else []
        out.scoring_s += time.perf_counter() - t1
        records.append({
            "id": concept,
            "prompt": reqs[k * per].prompt,
            "passage": passage,
            "samples": evidence,
            "sentences": [{"text": s, "score": round(float(v), 6)} for s, v in zip(sents, scores, strict=True)],
            "fragments": [s for s, claim in zip(split, claims, strict=True) if not claim],
            "score": float(np.mean(scores)) if scores else NO_CLAIM_SCORE,
        })
    return records


def _bootstrap(sums: np.ndarray, counts: np.ndarray, confidence: float, resamples: int, seed: int) -> Interval:
    """Percentile bootstrap of sum(scores)/sum(sentences), resampling whole passages (their sentences
    are not independent)."""
    if len(sums) < 2:
        # One passage says nothing about the spread; the honest interval is the whole range.
        return Interval(low=0.0, high=1.0, confidence=confidence, method="one passage: uninformative")
    from scipy import stats as sps  # here: a sequential or fully cached run never needs scipy.stats

    res = sps.bootstrap(
        (sums, counts), lambda s, c, axis=-1: s.sum(axis=axis) / c.sum(axis=axis), paired=True,
        vectorized=True, confidence_level=confidence, n_resamples=resamples, method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Interval(low=float(ci.low), high=float(ci.high), confidence=confidence, method="bootstrap")
