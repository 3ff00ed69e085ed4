"""Generalization accuracy: share of questions whose answer part contains a gold answer.

The gate compares the lower bound of a two-sided Wilson interval at the target's confidence with
the minimum, so a small sample cannot pass by luck. Exact match and per-complexity accuracy are
reported beside it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from adapters.base import Adapter
from edgeready.advice import accuracy_advice
from edgeready.candidates import Candidate
from edgeready.config_errors import ConfigError
from edgeready.datasets.countries import kb_provenance, load_countries_qa
from edgeready.datasets.sampling import stratified_sample
from edgeready.datasets.webqsp import load_webqsp
from edgeready.measurement import Check, GateResult, Measurement, judge
from edgeready.prompts import qa_request
from edgeready.records import QAItem, Response
from edgeready.scoring.qa import QAScore, score_response
from edgeready.sequential import SequentialProportionTest
from edgeready.stats import Interval, wilson
from edgeready.targets import AccuracyGate, DatasetSpec, check_reachable


def resolve_data_path(spec_path: str, data_dir: Path | None) -> Path:
    path = Path(spec_path).expanduser()
    if not path.is_absolute():
        if data_dir is None:
            raise ConfigError(
                f"dataset path '{spec_path}' is relative but no data directory is set "
                "(pass --data-dir; ../shared/data is the default when it exists)"
            )
        path = data_dir / path
    if not path.is_file():
        raise ConfigError(f"dataset file not found: {path}")
    return path


def load_dataset(spec: DatasetSpec, data_dir: Path | None) -> tuple[list[QAItem], dict[str, Any]]:
    if spec.kind == "countries-kb":
        return load_countries_qa(), {"dataset": "countries-kb (embedded)", **kb_provenance()}
    assert spec.path is not None  # the schema requires it for webqsp
    path = resolve_data_path(spec.path, data_dir)
    return load_webqsp(path), {"dataset": "webqsp", "path": str(path)}


def select_items(gate: AccuracyGate, items: list[QAItem], limit: int | None) -> list[QAItem]:
    n = limit if limit is not None else gate.sample_size
    try:
        check_reachable(gate.min_accuracy, min(n, len(items)), gate.confidence)
    except ValueError as exc:
        raise ConfigError(f"--limit {n}: {exc}") from None
    return stratified_sample(items, n, gate.seed)


def measure_accuracy(
    adapter: Adapter, candidate: Candidate, gate: AccuracyGate, items: list[QAItem], provenance: dict[str, Any],
    responses_out: list[Response] | None = None,
) -> Measurement:
    requests = requests_all = [qa_request(item, gate.max_tokens) for item in items]
    started = time.perf_counter()
    # Fixed-n answers every item; sequential answers rounds until the always-valid test decides.
    test = None
    round_size = len(items)
    if gate.mode == "sequential":
        test = SequentialProportionTest(threshold=gate.min_accuracy, alpha=1 - gate.confidence, delta=gate.delta)
        round_size = gate.round_size
    responses: list[Response] = []
    scores: list[QAScore] = []
    decision = None
    for start in range(0, len(requests), round_size):
        batch = adapter.generate(requests[start:start + round_size])
        responses += batch
        scores += [score_response(r.text, it.answers) for r, it in zip(batch, items[start:], strict=False)]
        if test is not None:
            decision = test.update(sum(s.correct for s in scores[start:]), len(batch))
            if decision.status != "continue":
                break
    if test is not None and decision is not None and decision.status == "continue":
        decision = test.finish()
    items, requests = items[: len(responses)], requests[: len(responses)]
    wall = time.perf_counter() - started
    if responses_out is not None:
        responses_out.extend(responses)  # the latency gate of an offload target reuses them
    records: list[dict[str, Any]] = []
    for item, req, resp, s in zip(items, requests, responses, scores, strict=True):
        records.append({
            "id": item.id,
            "complexity": item.complexity,
            "hops": item.hops,
            "question": item.question,
            "prompt": req.prompt if candidate.prompt_style == "few-shot" else [list(m) for m in req.messages],
            "response": resp.text,
            "answer_part": s.answer,
            "gold": list(item.answers),
            "correct": s.correct,
            "exact": s.exact,
            "score": 1.0 if s.correct else 0.0,
            "prompt_tokens": resp.prompt_tokens,
            "completion_tokens": resp.completion_tokens,
            "latency_s": round(resp.timings.total_s, 4),
            "served_by": resp.served_by,
            **({"fallback": True} if resp.meta.get("fallback") else {}),
        })
    n = len(records)
    k = sum(r["correct"] for r in records)
    by: dict[str, Any] = {}
    for cx in ("simple", "complex"):
        sub = [r for r in records if r["complexity"] == cx]
        if sub:
            ks = sum(r["correct"] for r in sub)
            ci = wilson(ks, len(sub), gate.confidence)
            by[cx] = {"n": len(sub), "accuracy": ks / len(sub), "interval": [ci.low, ci.high],
                      "served_by_server": sum(r["served_by"] == "server" for r in sub)}
    interval = wilson(k, n, gate.confidence)
    sequential: dict[str, Any] = {"mode": gate.mode}
    if decision is not None:
        # The always-valid bounds replace Wilson's: the gate looked at the data after every round.
        interval = Interval(low=decision.lower, high=decision.upper, confidence=gate.confidence,
                            method="beta-binomial confidence sequence")
        sequential.update({"decision": decision.status, "items_used": n, "max_items": len(requests_all),
                           "round_size": gate.round_size, "reason": decision.reason})
    return Measurement(
        gate="accuracy",
        metric="accuracy (answer contains a gold answer)",
        value=k / n,
        unit="",
        n=n,
        interval=interval,
        method="measured",
        meter="contains-gold after normalization; answer part = up to the first newline",
        provenance={**provenance, "adapter": adapter.describe(), "prompt_style": candidate.prompt_style,
                    "seed": gate.seed, "max_tokens": gate.max_tokens},
        details={
            "correct": k,
            "exact_match": sum(r["exact"] for r in records) / n,
            "by_complexity": by,
            "wall_s": round(wall, 3),
            "completion_tokens": sum(r["completion_tokens"] for r in records),
            "prompt_tokens": sum(r["prompt_tokens"] for r in records),
            "cache_hits": sum(r.meta.get("cache") == "hit" for r in responses),
            "sequential": sequential,
        },
        items=records,
    )


def judge_accuracy(base: dict[str, str], m: Measurement, gate: AccuracyGate, candidate: Candidate) -> GateResult:
    assert m.interval is not None
    check = Check(
        name="accuracy",
        observed=m.interval.low,
        op=">=",
        threshold=gate.min_accuracy,
        unit="",
        compared=f"Wilson lower bound ({gate.confidence:.0%})",
    )
    advice = accuracy_advice(m, check, candidate.strategy, candidate.quantization)
    return judge(base, m, [check], advice)
