"""Hallucination rate: SelfCheckGPT over passages the model writes about real entities.

Protocol (Manakul et al., EMNLP 2023): for each concept the prompt "This is a passage from Wikipedia
about {concept}:"; one main passage by greedy decoding and N stochastic samples (temperature 1.0,
seeds seed+1..seed+N); the main passage split into sentences with pysbd; every sentence scored in
[0, 1] against the N samples by the target's scorer (1 = likely hallucinated: the samples do not
back it up). Rate = mean sentence score over all sentences of all passages; the gate passes only
when the upper bound of a bootstrap interval over passages is within the maximum.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from adapters.base import Adapter
from edgeready.cache import GenerationStore
from edgeready.candidates import Candidate
from edgeready.config_errors import ConfigError
from edgeready.gates.accuracy import resolve_data_path
from edgeready.gates.rounds import hallucination_test, mean_fixed_equivalent, score_in_rounds, sequential_details
from edgeready.measurement import Check, GateResult, Measurement, judge
from edgeready.records import GenerationRequest
from edgeready.stats import Interval
from edgeready.targets import ConceptSpec, HallucinationGate

PROMPT = "This is a passage from Wikipedia about {concept}:"
_TAG = re.compile(r"<[^>]{1,40}>")
_TERMINAL = (".", "!", "?", '"', "”", "'", ")")


def load_concepts(spec: ConceptSpec, data_dir: Path | None) -> tuple[list[str], dict[str, Any]]:
    if spec.kind == "countries-kb":
        from edgeready.datasets.countries import embedded_concepts, kb_provenance

        return embedded_concepts(), {"concepts": "countries-kb (embedded)", **kb_provenance()}
    assert spec.path is not None
    path = resolve_data_path(spec.path, data_dir)
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ConfigError(f"{path}: no concepts (one name per line expected)")
    return names, {"concepts": "file", "path": str(path)}


def choose_concepts(concepts: list[str], n: int, seed: int) -> list[str]:
    unique = sorted(set(concepts))
    return random.Random(seed).sample(unique, min(n, len(unique)))


def request_for(concept: str, gate: HallucinationGate, seed: int, temperature: float) -> GenerationRequest:
    # Plain text: a chat model's adapter sends it as the one user turn (prompts.form_for).
    return GenerationRequest(prompt=PROMPT.format(concept=concept), max_tokens=gate.max_tokens,
                             temperature=temperature, seed=seed)


def clean_passage(text: str) -> str:
    """Drop markup a base model imitates from web text (e.g. '<blockquote>') and outer whitespace."""
    return _TAG.sub(" ", text).strip()


def sentences_of(passage: str) -> list[str]:
    """pysbd sentences; an unfinished last sentence (cut by max_tokens) is dropped when others exist,
    since scoring a fragment measures the token limit, not the model."""
    from edgeready.selfcheck.embedding import split_sentences

    sents = split_sentences(passage)
    if len(sents) > 1 and not sents[-1].rstrip().endswith(_TERMINAL):
        sents = sents[:-1]
    return sents


def measure_hallucination(
    adapter: Adapter, gate: HallucinationGate, concepts: list[str],
    provenance: dict[str, Any], threads: int, store: GenerationStore | None = None,
) -> Measurement:
    """`store`: keep the sentence scores there too, so that a re-run loads no scorer model."""
    from edgeready.selfcheck import make_scorer

    # torch's threads follow the profile (set when the scorer loads; a scorer_options value wins).
    options = gate.scorer_options if gate.scorer == "ngram" else {"threads": threads, **gate.scorer_options}
    scorer = make_scorer(gate.scorer, **options)
    # Fail before generating anything: ScorerUnavailable makes the gate an error. With a store the full
    # load waits for the first passage not scored before (its cheap preflight runs now).
    check = getattr(scorer, "preflight" if store is not None else "load", None)
    if callable(check):
        check()
    if store is not None:
        from edgeready.selfcheck.cached import CachedScorer, scorer_identity

        scorer = CachedScorer(scorer, store, scorer_identity(scorer, gate.scorer_options))
    records: list[dict[str, Any]] = []
    gen_s = score_s = 0.0
    # The device adapter counts the prompt tokens it evaluated (behind the cache, if any); a lazily
    # loaded device that every request found in the cache evaluated none.
    evaluated0 = _prompt_tokens_evaluated(adapter)
    completion_tokens = 0
    test = hallucination_test(gate) if gate.mode == "sequential" else None

    def score_round(start: int, stop: int) -> list[float | None]:
        nonlocal gen_s, score_s, completion_tokens
        out: list[float | None] = []
        for concept in concepts[start:stop]:
            reqs = [request_for(concept, gate, gate.seed, 0.0)] + [
                request_for(concept, gate, gate.seed + i, 1.0) for i in range(1, gate.samples + 1)
            ]
            t0 = time.perf_counter()
            main, *samples = adapter.generate(reqs)
            gen_s += time.perf_counter() - t0
            completion_tokens += main.completion_tokens + sum(s.completion_tokens for s in samples)
            passage = clean_passage(main.text)
            evidence = [clean_passage(s.text) for s in samples]
            sents = sentences_of(passage)
            t1 = time.perf_counter()
            scores = scorer.score(sents, evidence) if sents else []
            score_s += time.perf_counter() - t1
            score = float(np.mean(scores)) if scores else None
            records.append({
                "id": concept,
                "prompt": reqs[0].prompt,
                "passage": passage,
                "samples": evidence,
                "sentences": [{"text": s, "score": round(float(v), 6)} for s, v in zip(sents, scores, strict=True)],
                "score": score,
            })
            out.append(score)
        return out

    used, decision = score_in_rounds(len(concepts), gate, test, score_round)
    scored = [r for r in records if r["sentences"]]
    if not scored:
        raise RuntimeError(f"the model wrote no sentence for any of {len(records)} concepts; nothing to score")
    sums = np.array([sum(s["score"] for s in r["sentences"]) for r in scored])
    counts = np.array([len(r["sentences"]) for r in scored])
    all_scores = [s["score"] for r in scored for s in r["sentences"]]
    rate = float(sums.sum() / counts.sum())
    passage_scores = np.array([r["score"] for r in scored])
    sequential: dict[str, Any] = {"mode": gate.mode}
    if test is not None and decision is not None:
        # The sequential test is about passages (the independent units, each scored in [0, 1]): its rate is
        # SelfCheckGPT's passage-level score, the mean over passages of their mean sentence score.
        value = float(passage_scores.mean())
        interval = Interval(low=decision.lower, high=decision.upper, confidence=gate.confidence,
                            method="betting confidence sequence (passage level)")
        sd = float(passage_scores.std(ddof=1)) if len(passage_scores) > 1 else None
        sequential = sequential_details(gate, test, decision, used, len(concepts), mean_fixed_equivalent(gate, sd))
        statistic = "passage-level (mean over passages of the mean sentence score)"
    else:
        value = rate
        interval = _bootstrap(sums, counts, gate.confidence, gate.bootstrap_resamples, gate.seed)
        statistic = "sentence-level (mean over all sentences)"
    worst = sorted(((s["score"], r["id"], s["text"]) for r in scored for s in r["sentences"]), reverse=True)[:10]
    evaluated1 = _prompt_tokens_evaluated(adapter)
    evaluated = evaluated1 - (evaluated0 or 0) if evaluated1 is not None else None
    return Measurement(
        gate="hallucination",
        metric=f"hallucination rate (SelfCheck-{gate.scorer}, {statistic.split(' ')[0]})",
        value=value,
        unit="",
        n=len(scored),
        interval=interval,
        method="measured",
        meter=f"SelfCheckGPT-{gate.scorer} against {gate.samples} samples at temperature 1.0",
        provenance={**provenance, "adapter": adapter.describe(), "scorer": gate.scorer,
                    "scorer_options": gate.scorer_options, "samples": gate.samples, "seed": gate.seed},
        details={
            "statistic": statistic,
            "sentence_rate": rate,
            "passage_rate": float(passage_scores.mean()),
            "sentences": len(all_scores),
            "passages_scored": len(scored),
            "passages_empty": len(records) - len(scored),
            "share_above_tau": sum(v > gate.tau for v in all_scores) / len(all_scores),
            "tau": gate.tau,
            "per_passage": {r["id"]: r["score"] for r in records},
            "worst_sentences": [{"score": s, "concept": c, "text": t} for s, c, t in worst],
            "generation_s": round(gen_s, 3),
            "scoring_s": round(score_s, 3),
            "completion_tokens": completion_tokens,
            "prompt_tokens_evaluated": evaluated,
            "cache_hits": getattr(adapter, "hits", None),
            "score_cache_hits": getattr(scorer, "hits", None),
            "interval_note": (f"percentile bootstrap over passages, {gate.bootstrap_resamples} resamples"
                              if test is None else "always-valid: betting e-processes (Waudby-Smith & Ramdas)"),
            "sequential": sequential,
        },
        items=records,
    )


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


def judge_hallucination(
    base: dict[str, str], m: Measurement, gate: HallucinationGate, candidate: Candidate
) -> GateResult:
    assert m.interval is not None
    seq = m.details.get("sequential", {})
    sequential = seq.get("mode") == "sequential"
    if sequential:
        # The e-value the test decided by, against the boundary it used (see judge_accuracy).
        check = Check("hallucination_rate", seq["log_evalue_pass"], ">=", seq["log_boundary_pass"], "",
                      f"log e-value that the passage-level rate is below {gate.max_rate:g} (boundary log(1/alpha))")
    else:
        check = Check("hallucination_rate", m.interval.high, "<=", gate.max_rate, "",
                      f"bootstrap upper bound ({gate.confidence:.0%})")
    steps = (f"quantize at more bits than {candidate.quantization or 'now'} (low-bit models drift from the facts "
             "first), keep the token embedding at Q8_0, prune fewer blocks, or distill/fine-tune on factual text")
    if sequential and seq.get("stopped_by") == "fail boundary":
        advice = (f"hallucination rate {m.value:.3f} over {m.n} passages, shown above {gate.max_rate - gate.delta:g} "
                  f"(maximum - indifference) by the sequential test at beta = {seq['beta']:g}: {steps}")
    elif seq.get("stopped_by") == "budget" or (not sequential and m.value <= gate.max_rate):
        key = "max_items" if sequential else "sample_size"
        advice = (f"inconclusive: the rate {m.value:.3f} was not shown to be within {gate.max_rate} at the "
                  f"target's confidence; score more concepts ({key}) before changing the model")
    else:
        advice = f"hallucination rate bound over the maximum by {m.interval.high - gate.max_rate:.3f}: {steps}"
    return judge(base, m, [check], advice)


def _prompt_tokens_evaluated(adapter: Adapter) -> int | None:
    """Prompt tokens the leaf device adapter (behind the cache, if any) evaluated so far; None for an
    adapter that does not count them."""
    leaf = getattr(adapter, "inner", adapter)
    value = getattr(leaf, "prompt_tokens_evaluated", None)
    return value if isinstance(value, int) else None
