"""The way back to step 1: for a failed gate, what to try next and by how much it failed.

The rules follow what moves each metric in practice: accuracy and hallucination respond to more
bits (K-quants above 4 bits, a higher-precision token embedding), less pruning, or distillation
from a stronger teacher; memory responds to fewer bits, a quantized token embedding (70 % of a
small model's file), pruned blocks, or a shorter context (the KV cache).
"""

from __future__ import annotations

from edgeready.measurement import Check, Measurement
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
        if c.name == "weights":
            bits = _BITS.get((quantization or "").upper())
            lower = "Q3_K_M or Q2_K" if bits is None or bits >= 4 else "Q2_K"
            steps.append(f"weights over by {over:.0f} MB: quantize to {lower}, quantize the token embedding "
                         "too (it dominates small models), or prune transformer blocks")
        else:
            steps.append(f"peak resident memory over by {over:.0f} MB: shrink the weights as above, or cut the "
                         f"context (the KV cache takes {kv_cache_mb:.0f} MB at the target's n_ctx)")
    return "; ".join(steps)
