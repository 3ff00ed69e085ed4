"""The first-tier gate for derived candidates: same GGUF conformance as the base, and a next-token
distribution close to the base's (KL divergence over a fixed text, edgeready/kld.py).

The KL mean is compared through its upper bound (mean + z x standard error), top-token agreement
through its lower bound; the 99th percentile is a point value (its interval would need a bootstrap
over correlated tokens, which we do not claim). Structural checks (architecture, tokenizer, special
tokens, context length, digest) pass or fail outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from edgeready.advice import CONFORMANCE_ADVICE
from edgeready.candidates import Candidate
from edgeready.gates.base import Gate, RunResources, register
from edgeready.measurement import Check, Judgement, Measurement
from edgeready.schema import GateConfig, Pair, Profile
from edgeready.stats import Interval


def _z() -> float:
    """The two-sided 95 % normal quantile (scipy's, imported here: configuration errors must stay fast)."""
    from scipy.stats import norm

    return float(norm.ppf(0.975))


class ConformanceConfig(GateConfig):
    """`gates.conformance`: cheap first tier for derived candidates (those naming a `base`): GGUF conformance
    with the base and next-token KL divergence from it on a fixed text, as llama.cpp's perplexity tool reports
    it. A candidate that fails it is not sent to the expensive gates."""

    max_kld_mean: float = Field(gt=0)
    max_kld_p99: float = Field(gt=0)
    min_same_top_pct: float = Field(default=0.0, ge=0, le=100)
    n_ctx: int = Field(default=512, ge=64, le=8192)


@dataclass
class ConformanceInputs:
    base: Path
    candidate: Path
    manifest_sha: str | None
    profile: Profile
    cache_dir: Path
    provenance: dict[str, Any]


@register
class Conformance(Gate[ConformanceConfig, ConformanceInputs]):
    name = "conformance"
    order = 0
    config = ConformanceConfig
    description = "cheap first-tier checks (GGUF conformance, KL divergence)"
    roles = ("device", "server")
    first_tier = True

    def applies(self, pair: Pair) -> bool:
        return pair.candidate.base is not None

    def gather(self, run: RunResources, pair: Pair, cfg: ConformanceConfig) -> ConformanceInputs:
        assert pair.candidate.base is not None  # applies()
        base = run.part(pair.candidate, pair.candidate.base)
        base_path, _ = run.model(base)
        cand_path, sha = run.model(pair.candidate)
        run.release()  # KLD loads both models itself
        art = pair.candidate.artifact
        return ConformanceInputs(base_path, cand_path, art.sha256 if art else None, pair.target.profile,
                                 run.cache_dir, {"sha256": sha, "base_candidate": base.name})

    def measure(self, inputs: ConformanceInputs, cfg: ConformanceConfig) -> Measurement:
        return measure_conformance(inputs.base, inputs.candidate, inputs.manifest_sha, cfg, inputs.profile,
                                   inputs.cache_dir, inputs.provenance)

    def judge(self, m: Measurement, cfg: ConformanceConfig, subject: Candidate) -> Judgement:
        d = m.details
        assert m.interval is not None
        z = _z()
        checks = [Check(f"gguf:{c['name']}", 1.0 if c["passed"] else 0.0, ">=", 1.0, "", c["detail"][:80])
                  for c in d["structural"]]
        checks += [
            Check("kld_mean", m.interval.high, "<=", cfg.max_kld_mean, "nats", "upper bound (95%)"),
            Check("kld_p99", d["kld_p99"], "<=", cfg.max_kld_p99, "nats", "99th percentile over tokens"),
            Check("same_top", d["same_top_pct"] - z * d["same_top_stderr"], ">=", cfg.min_same_top_pct, "%",
                  "lower bound (95%)"),
        ]
        return Judgement(checks, CONFORMANCE_ADVICE)


def measure_conformance(
    base: Path, cand: Path, manifest_sha: str | None, gate: ConformanceConfig, profile: Profile, cache_dir: Path,
    provenance: dict[str, Any],
) -> Measurement:
    from edgeready.conformance import check_against_checkpoint, check_conformance
    from edgeready.kld import default_text, kl_divergence

    # A base that is a checkpoint folder (format: hf): the compiled GGUF against the model it was compiled from.
    structural = (check_against_checkpoint(base, cand, manifest_sha, default_text()) if base.is_dir()
                  else check_conformance(base, cand, manifest_sha))
    kld = kl_divergence(base, cand, n_ctx=gate.n_ctx, threads=profile.threads, cache_dir=cache_dir / "kld")
    z = _z()
    return Measurement(
        gate="conformance",
        metric="mean KL divergence from the base (next-token distributions)",
        value=kld.kld_mean,
        unit="nats",
        n=kld.n_tokens,
        interval=Interval(low=max(0.0, kld.kld_mean - z * kld.kld_stderr), high=kld.kld_mean + z * kld.kld_stderr,
                          confidence=0.95, method="normal (mean +- 1.96 standard errors over tokens)"),
        method="measured",
        meter=("the checkpoint's float32 logits (transformers) and the candidate's (llama.cpp)" if base.is_dir()
               else "llama.cpp logits of base and candidate") + " on edgeready/data/kld_text.txt",
        provenance={**provenance, "base": str(base), "candidate": str(cand)},
        details={**kld.as_dict(), "structural": [c.__dict__ for c in structural]},
        items=[{"id": c.name, "passed": c.passed, "detail": c.detail} for c in structural],
    )
