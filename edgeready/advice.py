"""The way back to step 1: for a failed gate, what to try next and by how much it failed.

All the built-in gates' advice lives here, so the suite speaks with one voice. The rules follow what moves
each metric in practice: accuracy and hallucination respond to more bits (K-quants above 4 bits, a
higher-precision token embedding), less pruning, or distillation from a stronger teacher; memory responds to
fewer bits, a quantized token embedding (70 % of a small model's file), pruned blocks, or a shorter context
(the KV cache); a sequential gate that ran out of budget is inconclusive, not bad.
"""

from __future__ import annotations

from edgeready.measurement import Check, Measurement, PairedOutcome, SequentialOutcome
from edgeready.stats import wilson

_BITS = {"Q2_K": 2, "Q3_K_S": 3, "Q3_K_M": 3, "Q3_K_L": 3, "Q4_0": 4, "Q4_1": 4, "Q4_K_S": 4, "Q4_K_M": 4,
         "Q5_0": 5, "Q5_1": 5, "Q5_K_S": 5, "Q5_K_M": 5, "Q6_K": 6, "Q8_0": 8, "F16": 16, "BF16": 16, "F32": 32}


def _needed_n(p_hat: float, minimum: float, confidence: float, n: int) -> int | None:
    """Smallest n (doubling search) at which the observed rate's Wilson bound would clear `minimum`."""
    if p_hat <= minimum:
        return None
    m = n
    while m < 1_000_000:
        m *= 2
        if wilson(round(p_hat * m), m, confidence).low >= minimum:
            return m
    return None


def accuracy_advice(m: Measurement, check: Check, strategy: str, quantization: str | None,
                    shown_below: str | None = None) -> str:
    """`shown_below`: for a sequential gate that stopped at its fail boundary, what it showed (the
    evidence is settled, so no "ask more questions")."""
    gap = -check.margin
    if shown_below is None and m.interval is not None and m.value >= check.threshold:
        n_more = _needed_n(m.value, check.threshold, m.interval.confidence, m.n or 1)
        more = f"about {n_more} questions" if n_more else "more questions"
        return (f"inconclusive rather than bad: the point estimate {m.value:.3f} meets {check.threshold} but "
                f"the lower bound misses it by {gap:.3f}; raise sample_size to {more} before changing the model")
    bits = _BITS.get((quantization or "").upper())
    steps = []
    if strategy == "pruning":
        steps.append("prune fewer blocks (or heal the pruned model with a short distillation)")
    if bits is not None and bits < 8:
        steps.append(f"quantize at more bits than {quantization} (Q5_K_M, Q6_K or Q8_0), keeping the token "
                     "embedding at Q8_0 or F16")
    steps.append("distill or fine-tune on the target domain from a stronger teacher, or start from a larger base")
    head = shown_below or f"accuracy short by {gap:.3f} (lower bound vs minimum)"
    return f"{head}: " + "; ".join(steps)


def memory_advice(checks: list[Check], quantization: str | None, kv_cache_mb: float) -> str:
    failed = [c for c in checks if not c.passed]
    steps = []
    for c in failed:
        over = -c.margin
        if c.name.endswith("_vs_baseline"):
            what = "weights" if c.name.startswith("weights") else "peak resident memory"
            steps.append(f"{what} {c.observed:.3f}x the baseline's, above the {c.threshold:.3f}x allowed: a "
                         "compression step made it bigger (an unquantized tensor type, a larger context or batch)")
            continue
        if c.name == "weights":
            bits = _BITS.get((quantization or "").upper())
            lower = "Q3_K_M or Q2_K" if bits is None or bits >= 4 else "Q2_K"
            steps.append(f"weights over by {over:.0f} MB: quantize to {lower}, quantize the token embedding "
                         "too (it dominates small models), or prune transformer blocks")
        else:
            steps.append(f"peak resident memory over by {over:.0f} MB: shrink the weights as above, or cut the "
                         f"context (the KV cache takes {kv_cache_mb:.0f} MB at the target's n_ctx)")
    return "; ".join(steps)


def budget_advice(seq: SequentialOutcome) -> str:
    """A sequential gate that spent its budget without a verdict: inconclusive rather than bad."""
    n = (seq.fixed_n_equivalent or {}).get("n", "more")
    return (f"inconclusive rather than bad: {seq.items_used} items did not settle the test ({seq.reason}); raise "
            f"max_items (a fixed-n test at these error rates needs {n} items) before changing the model")


def shown_below(metric: str, value: float, n: int | None, bound: float, bound_name: str,
                seq: SequentialOutcome, above: bool = False) -> str:
    """What a sequential gate that stopped at its fail boundary showed (the evidence is settled)."""
    side = "above" if above else "below"
    unit = "passages" if above else "items"
    return (f"{metric} {value:.3f} on {n} {unit}, shown {side} {bound:g} ({bound_name}) by the sequential test at "
            f"beta = {seq.beta:g}")


def hallucination_advice(m: Measurement, max_rate: float, quantization: str | None,
                         seq: SequentialOutcome | None) -> str:
    steps = (f"quantize at more bits than {quantization or 'now'} (low-bit models drift from the facts first), "
             "keep the token embedding at Q8_0, prune fewer blocks, or distill/fine-tune on factual text")
    if seq is not None and seq.stopped_by == "fail boundary":
        shown = shown_below("hallucination rate", m.value, m.n, max_rate - seq.delta, "maximum - indifference",
                            seq, above=True)
        return f"{shown}: {steps}"
    if (seq is not None and seq.stopped_by == "budget") or (seq is None and m.value <= max_rate):
        key = "max_items" if seq is not None else "sample_size"
        return (f"inconclusive: the rate {m.value:.3f} was not shown to be within {max_rate} at the target's "
                f"confidence; score more concepts ({key}) before changing the model")
    assert m.interval is not None
    return f"hallucination rate bound over the maximum by {m.interval.high - max_rate:.3f}: {steps}"


def energy_advice(check: Check) -> str:
    if check.name == "energy_vs_baseline":
        return (f"energy per query up to {check.observed:.3f}x the baseline's, above the {check.threshold:.3f}x "
                "allowed: fewer bits or pruned blocks cut memory traffic per token; longer answers cost more too")
    return (f"energy per query over by {-check.margin:.3g} mWh: fewer bits (less memory traffic per token), "
            "pruned blocks, or shorter answers (max_tokens); on a phone, pin threads to the big cores")


def fallback_advice(details: dict[str, object]) -> str:
    errors = details.get("fallback_errors") or []  # the latency gate lists them; the accuracy gate counts them
    first = f" (first: {errors[0]})" if isinstance(errors, list) and errors else ""
    return (f"{details.get('fallbacks')} requests routed to the server were answered by the device instead{first}: "
            "the offload path failed, so the deployment was not measured as designed; fix the server or the "
            "network (or its timeout_s) and run again before changing the model")


def paired_advice(pc: PairedOutcome, metric: str, quantization: str | None) -> str:
    """A candidate not shown within its margin of the baseline: by how much, where the losses sit, what next."""
    where = ""
    regressions = [f for f in pc.flips if f.get("flip") == "regression"]
    by = {cx: sum(f.get("complexity") == cx for f in regressions) for cx in ("simple", "complex")}
    if any(by.values()):
        where = f" ({by['simple']} simple, {by['complex']} complex questions among those listed)"
    head = (f"{metric} lost {pc.loss:+.3f} against {pc.baseline} on {pc.n} paired items (up to "
            f"{pc.loss_upper:+.3f}), margin {pc.margin:g}: {pc.regressions} regressions{where} against "
            f"{pc.improvements} improvements")
    if pc.stopped_by == "budget" and pc.loss < pc.margin:
        return (f"{head}; inconclusive rather than bad: the loss was not shown below the margin in {pc.n} items, "
                "ask more (sample_size or max_items) before changing the model")
    bits = _BITS.get((quantization or "").upper())
    more = f"quantize at more bits than {quantization}" if bits is not None and bits < 8 else "quantize at more bits"
    return (f"{head}: {more} or keep the token embedding at Q8_0 (the regressions listed in the report show "
            "which facts were lost)")


LATENCY_ADVICE = ("too slow or too much offloaded: route fewer prompts to the server (a stricter heuristic or a "
                  "lower cascade threshold), or make the device model good enough to keep more queries local")

CONFORMANCE_ADVICE = ("too far from the base: quantize at more bits (Q5_K_M or above), keep the token embedding "
                      "at Q8_0, or prune fewer blocks; a structural mismatch means the file is not a variant of "
                      "the base")
