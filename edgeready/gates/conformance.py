"""The first-tier gate for derived candidates: same GGUF conformance as the base, and a next-token
distribution close to the base's (KL divergence over a fixed text, edgeready/kld.py).

The KL mean is compared through its upper bound (mean + z x standard error), top-token agreement
through its lower bound; the 99th percentile is a point value (its interval would need a bootstrap
over correlated tokens, which we do not claim). Structural checks (architecture, tokenizer, special
tokens, context length, digest) pass or fail outright.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scipy.stats import norm

from edgeready.conformance import check_conformance
from edgeready.kld import kl_divergence
from edgeready.measurement import Check, GateResult, Measurement, judge
from edgeready.stats import Interval
from edgeready.targets import ConformanceGate, Profile

_Z = float(norm.ppf(0.975))


def measure_conformance(
    base: Path, cand: Path, manifest_sha: str | None, gate: ConformanceGate, profile: Profile, cache_dir: Path,
    provenance: dict[str, Any],
) -> Measurement:
    structural = check_conformance(base, cand, manifest_sha)
    kld = kl_divergence(base, cand, n_ctx=gate.n_ctx, threads=profile.threads, cache_dir=cache_dir / "kld")
    return Measurement(
        gate="conformance",
        metric="mean KL divergence from the base (next-token distributions)",
        value=kld.kld_mean,
        unit="nats",
        n=kld.n_tokens,
        interval=Interval(low=max(0.0, kld.kld_mean - _Z * kld.kld_stderr), high=kld.kld_mean + _Z * kld.kld_stderr,
                          confidence=0.95, method="normal (mean +- 1.96 standard errors over tokens)"),
        method="measured",
        meter="llama.cpp logits of base and candidate on edgeready/data/kld_text.txt",
        provenance={**provenance, "base": str(base), "candidate": str(cand)},
        details={**kld.as_dict(), "structural": [c.__dict__ for c in structural]},
        items=[{"id": c.name, "passed": c.passed, "detail": c.detail} for c in structural],
    )


def judge_conformance(base: dict[str, str], m: Measurement, gate: ConformanceGate) -> GateResult:
    d = m.details
    assert m.interval is not None
    checks = [Check(f"gguf:{c['name']}", 1.0 if c["passed"] else 0.0, ">=", 1.0, "", c["detail"][:80])
              for c in d["structural"]]
    checks += [
        Check("kld_mean", m.interval.high, "<=", gate.max_kld_mean, "nats", "upper bound (95%)"),
        Check("kld_p99", d["kld_p99"], "<=", gate.max_kld_p99, "nats", "99th percentile over tokens"),
        Check("same_top", d["same_top_pct"] - _Z * d["same_top_stderr"], ">=", gate.min_same_top_pct, "%",
              "lower bound (95%)"),
    ]
    advice = ("too far from the base: quantize at more bits (Q5_K_M or above), keep the token embedding at "
              "Q8_0, or prune fewer blocks; a structural mismatch means the file is not a variant of the base")
    return judge(base, m, checks, advice)
