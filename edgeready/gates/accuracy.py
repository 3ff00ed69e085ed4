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
from edgeready.gates.rounds import accuracy_fixed_equivalent, accuracy_test, score_in_rounds, sequential_details
from edgeready.measurement import Check, GateResult, Measurement, judge
from edgeready.prompts import qa_request
from edgeready.records import QAItem, Response
from edgeready.scoring.qa import QAScore, score_response
from edgeready.stats import Interval, wilson
from edgeready.targets import AccuracyGate, DatasetSpec


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
    n = limit if limit is not None else gate.cap
    try:
        gate.ensure_reachable(min(n, len(items)))
    except ValueError as exc:
        raise ConfigError(f"--limit {n}: {exc}") from None
    # Stratified and interleaved: every prefix keeps the simple/complex mix, which a sequential gate needs.
    return stratified_sample(items, n, gate.seed)


def measure_accuracy(
    adapter: Adapter, candidate: Candidate, gate: AccuracyGate, items: list[QAItem], provenance: dict[str, Any],
    responses_out: list[Response] | None = None,
) -> Measurement:
    requests_all = [qa_request(item, gate.max_tokens) for item in items]
    started = time.perf_counter()
    # Fixed-n answers every item in one batch; sequential answers rounds until the always-valid test decides.
    test = accuracy_test(gate) if gate.mode == "sequential" else None
    responses: list[Response] = []
    scores: list[QAScore] = []

    def score_round(start: int, stop: int) -> list[float | None]:
        batch = adapter.generate(requests_all[start:stop])
        responses.extend(batch)
        new = [score_response(r.text, it.answers) for r, it in zip(batch, items[start:stop], strict=True)]
        scores.extend(new)
        return [1.0 if s.correct else 0.0 for s in new]

    used, decision = score_in_rounds(len(items), gate, test, score_round)
    items, requests = items[: len(responses)], requests_all[: len(responses)]
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
    if test is not None and decision is not None:
        # The always-valid bounds replace Wilson's: the gate looked at the data after every round.
        interval = Interval(low=decision.lower, high=decision.upper, confidence=gate.confidence,
                            method="beta-binomial confidence sequence")
        sequential = sequential_details(gate, test, decision, used, len(requests_all),
                                        accuracy_fixed_equivalent(gate))
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
    seq = m.details.get("sequential", {})
    if seq.get("mode") == "sequential":
        # A sequential test decides by its e-value: the check compares the very float it decided by with the
        # very boundary, log(1/alpha). The interval beside it is for reading.
        evidence = (f"log likelihood ratio of accuracy {gate.min_accuracy + gate.delta:g} vs {gate.min_accuracy:g}"
                    if gate.test == "sprt" else f"log e-value against accuracy <= {gate.min_accuracy:g}")
        check = Check(name="accuracy", observed=seq["log_evalue_pass"], op=">=", threshold=seq["log_boundary_pass"],
                      unit="", compared=f"{evidence} (boundary log(1/alpha))")
    else:
        check = Check(name="accuracy", observed=m.interval.low, op=">=", threshold=gate.min_accuracy, unit="",
                      compared=f"Wilson lower bound ({gate.confidence:.0%})")
    if seq.get("stopped_by") == "budget":
        advice = (f"inconclusive rather than bad: {seq['items_used']} items did not settle the test "
                  f"({seq['reason']}); raise max_items (a fixed-n test at these error rates needs "
                  f"{(seq.get('fixed_n_equivalent') or {}).get('n', 'more')} items) before changing the model")
    elif seq.get("mode") == "sequential":
        advice = accuracy_advice(m, check, candidate.strategy, candidate.quantization, shown_below=(
            f"accuracy {m.value:.3f} on {m.n} items, shown below {gate.min_accuracy + gate.delta:g} (minimum + "
            f"indifference) by the sequential test at beta = {seq['beta']:g}"))
    else:
        advice = accuracy_advice(m, check, candidate.strategy, candidate.quantization)
    return judge(base, m, [check], advice)
