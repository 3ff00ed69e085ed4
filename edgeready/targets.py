"""Deployment targets: `thresholds/<role>/<name>.yaml`, a profile plus one block per gate.

Schema-validated with pydantic: unknown keys, wrong types and thresholds no run could meet are
errors that name the file, key and line (see config_errors.py), raised before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

from edgeready.config_errors import ConfigError, validate_file
from edgeready.stats import wilson_best_low

Role = Literal["device", "server", "offload"]
ROLES: tuple[Role, ...] = ("device", "server", "offload")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Battery(Strict):
    capacity_mah: float = Field(gt=0)
    voltage_v: float = Field(gt=0)


class PowerModel(Strict):
    """For the energy estimate on machines without a counter: watts per fully busy core."""

    active_w_per_core: float = Field(gt=0)
    idle_w: float = Field(default=0.0, ge=0)


class NetworkProfile(Strict):
    """Link between device and edge server, applied to the latency of offloaded requests."""

    rtt_ms: float = Field(ge=0)
    uplink_mbps: float = Field(gt=0)
    downlink_mbps: float = Field(gt=0)
    loss: float = Field(default=0.0, ge=0, lt=1)


class Profile(Strict):
    device: str = Field(description="Human name of the hardware, e.g. 'Xiaomi 10 Ultra (Snapdragon 865)'")
    ram_mb: float = Field(gt=0, description="Physical RAM of the device")
    app_memory_budget_mb: float = Field(gt=0, description="What the app hosting the model may use")
    threads: int = Field(ge=1, le=256)
    n_ctx: int = Field(ge=128, le=1_048_576)
    # Prompt tokens per decode. It sizes llama.cpp's compute buffer (n_batch x n_vocab logits), so
    # it is a memory setting as much as a speed one; 64 keeps Gemma's 262k vocabulary at 64 MiB.
    n_batch: int = Field(default=64, ge=1, le=4096)
    battery: Battery | None = None
    power: PowerModel | None = None
    network: NetworkProfile | None = None

    @model_validator(mode="after")
    def _budget_fits(self) -> Profile:
        if self.app_memory_budget_mb > self.ram_mb:
            raise ValueError(
                f"app_memory_budget_mb ({self.app_memory_budget_mb}) exceeds ram_mb ({self.ram_mb})"
            )
        return self


class SourceSpec(Strict):
    """Where a gate's inputs come from: `countries-kb` is embedded and takes no path; the other kind
    reads a file at `path`, absolute or relative to --data-dir."""

    kind: str
    path: str | None = None
    _EXAMPLE = ""  # a path to show when it is missing

    @model_validator(mode="after")
    def _path_for_files(self) -> SourceSpec:
        if self.kind == "countries-kb" and self.path:
            raise ValueError("kind 'countries-kb' is embedded and takes no 'path'")
        if self.kind != "countries-kb" and not self.path:
            raise ValueError(f"kind '{self.kind}' needs a 'path' (e.g. {self._EXAMPLE})")
        return self


class DatasetSpec(SourceSpec):
    """`webqsp` reads Microsoft's original JSON."""

    kind: Literal["countries-kb", "webqsp"]
    _EXAMPLE = "webqsp/WebQSP.train.json"


# Keys that mean something only to a sequential gate: given to a fixed one, they are an error, not ignored.
_SEQUENTIAL_ONLY = frozenset({"max_items", "round_size", "delta", "power", "test"})


class SequentialOptions(Strict):
    """How a gate spends its items. `fixed` scores `sample_size` items and compares a bound; `sequential`
    scores rounds of `round_size` and stops as soon as an always-valid test decides at the target's error
    rates (edgeready/sequential/, docs/SEQUENTIAL.md), after at most `max_items` (default: sample_size).
    alpha = 1 - confidence bounds the chance of passing a candidate that misses the threshold; beta = 1 - power
    bounds the chance of failing one that beats it by `delta` (the indifference margin)."""

    sample_size: int = Field(ge=1, description="Items to score (fixed); --limit overrides")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    mode: Literal["fixed", "sequential"] = "fixed"
    max_items: int | None = Field(default=None, ge=1, description="sequential: the most items scored")
    round_size: int = Field(default=10, ge=1, description="sequential: items scored between looks")
    delta: float = Field(default=0.05, ge=0, lt=1, description="sequential: the indifference margin")
    power: float | None = Field(default=None, gt=0.5, lt=1,
                                description="sequential: 1 - beta at the margin (default: confidence)")

    @model_validator(mode="after")
    def _sequential_keys(self) -> SequentialOptions:
        given = sorted(_SEQUENTIAL_ONLY & self.model_fields_set)
        if self.mode == "fixed" and given:
            raise ValueError(f"{', '.join(given)}: only used with mode: sequential (this gate is fixed-n)")
        if self.mode == "sequential" and self.cap < self.round_size:
            raise ValueError(f"max_items ({self.cap}) is smaller than round_size ({self.round_size})")
        return self

    @property
    def cap(self) -> int:
        """Items a sequential gate may score at most (a fixed gate scores exactly this many)."""
        return self.max_items if self.mode == "sequential" and self.max_items else self.sample_size

    @property
    def alpha(self) -> float:
        """The false-pass rate: 1 - confidence, rounded so that 0.95 gives exactly 0.05."""
        return round(1 - self.confidence, 12)

    @property
    def beta(self) -> float:
        return round(1 - (self.power if self.power is not None else self.confidence), 12)


class AccuracyGate(SequentialOptions):
    dataset: DatasetSpec
    sample_size: int = Field(ge=1, description="Questions to ask; --limit overrides")
    seed: int = 0
    min_accuracy: float = Field(gt=0, lt=1)
    max_tokens: int = Field(default=16, ge=1, le=512)
    # sprt: Wald's test of min_accuracy against min_accuracy + delta (fewest items at those two points);
    # mixture: the beta-binomial confidence sequence (delta may be 0; more items near the minimum).
    test: Literal["sprt", "mixture"] = "sprt"

    @model_validator(mode="after")
    def _reachable(self) -> AccuracyGate:
        if self.mode == "fixed":
            self.ensure_reachable(self.sample_size)
            return self
        if self.delta + self.min_accuracy >= 1:
            raise ValueError(f"min_accuracy + delta ({self.min_accuracy} + {self.delta}) must stay below 1")
        if self.test == "sprt" and self.delta == 0:
            raise ValueError("delta: an SPRT needs an indifference margin > 0 (e.g. 0.05), or use test: mixture")
        self.ensure_reachable(self.cap)
        if self.delta > 0:
            self._ensure_power()
        return self

    def _ensure_power(self) -> None:
        """The target promises that a model at min_accuracy + delta fails with probability <= beta. A budget
        that runs out before the test decides is a fail too, so check the promise at this budget, exactly."""
        from edgeready.gates.rounds import accuracy_test
        from edgeready.sequential.sprt import budget_for_power, operating_characteristics

        rule, p1 = accuracy_test(self).rule(), self.min_accuracy + self.delta
        op = operating_characteristics(p1, rule, self.round_size, self.cap)
        if op.reject_prob > self.beta:
            enough = budget_for_power(rule, p1, self.beta, self.round_size, 2 * self.cap)
            raise ValueError(
                f"max_items {self.cap} is too small for power {1 - self.beta:g} at {p1:g}: a model at min_accuracy "
                f"+ delta would not pass in {op.reject_prob:.1%} of runs (the budget runs out first in "
                f"{op.undecided_prob:.1%}); raise max_items to about {enough or 'many more'}, widen delta, or "
                "lower power")

    def ensure_reachable(self, n: int) -> None:
        """Raise ValueError when no run of n items could pass, even with every answer correct."""
        if self.mode == "fixed":
            check_reachable(self.min_accuracy, n, self.confidence)
            return
        from edgeready.gates.rounds import accuracy_test

        if not accuracy_test(self).reachable(n):
            raise ValueError(f"min_accuracy {self.min_accuracy} is unreachable within {n} items: even all "
                             "correct would not pass the sequential test; raise max_items or lower the minimum")


def check_reachable(min_accuracy: float, n: int, confidence: float) -> None:
    """A gate compares the Wilson lower bound with the minimum; with n questions even a perfect
    score has a bound below 1, so some minimums can never pass. Say so before running anything."""
    best = wilson_best_low(n, confidence)
    if best < min_accuracy:
        raise ValueError(
            f"min_accuracy {min_accuracy} is unreachable with {n} questions at confidence {confidence}: "
            f"even {n}/{n} correct gives a Wilson lower bound of {best:.3f}; ask more questions "
            "or lower the minimum"
        )


class MemoryGate(Strict):
    max_weights_mb: float = Field(gt=0)
    max_peak_rss_mb: float = Field(gt=0)
    probe_prompts: int = Field(default=8, ge=1, description="Gate prompts answered in the probe")


class ConceptSpec(SourceSpec):
    """Who the model writes about: a file with one name per line (`wikibio` reads
    ../shared/data/wikibio/concepts.txt, the WikiBio people)."""

    kind: Literal["countries-kb", "wikibio"]
    _EXAMPLE = "wikibio/concepts.txt"


class HallucinationGate(SequentialOptions):
    concepts: ConceptSpec
    sample_size: int = Field(ge=2, description="Concepts to write about; --limit overrides")
    seed: int = 0
    samples: int = Field(default=4, ge=1, le=64, description="Stochastic samples per concept (SelfCheck's N)")
    max_tokens: int = Field(default=80, ge=8, le=1024)
    scorer: Literal["nli", "ngram", "embedding"] = "embedding"
    scorer_options: dict[str, str | int | float] = Field(default_factory=dict)
    tau: float = Field(default=0.5, gt=0, lt=1, description="A sentence scoring above it counts as hallucinated")
    max_rate: float = Field(gt=0, le=1)
    bootstrap_resamples: int = Field(default=2000, ge=100)
    # A concept costs 1 + samples generations, so look more often than the accuracy gate does.
    round_size: int = Field(default=5, ge=1, description="sequential: concepts scored between looks")

    @model_validator(mode="after")
    def _reachable(self) -> HallucinationGate:
        if self.mode == "fixed":
            return self
        if not 0 < self.delta < self.max_rate:
            raise ValueError(f"delta must be within (0, max_rate = {self.max_rate}) for the sequential test")
        if self.max_rate >= 1:
            raise ValueError("max_rate 1 cannot be exceeded: use mode: fixed or a lower maximum")
        self.ensure_reachable(self.cap)
        return self

    def ensure_reachable(self, n: int) -> None:
        """Raise ValueError when no sequential run of n concepts could pass, even with every score 0."""
        if self.mode == "fixed":
            return
        from edgeready.gates.rounds import hallucination_test

        if not hallucination_test(self).reachable(n):
            raise ValueError(f"max_rate {self.max_rate} cannot be shown within {n} concepts even if every "
                             "sentence scored 0; raise max_items or the maximum")


class EnergyGate(Strict):
    """Energy per query. `require: measured` turns an estimate into an error (for sign-off)."""

    max_mwh_per_query: float = Field(gt=0)
    require: Literal["measured", "any"] = "measured"
    meter: Literal["auto", "rapl", "nvml", "android", "estimate"] = "auto"
    queries_per_batch: int = Field(default=8, ge=1)
    min_window_s: float = Field(default=2.0, gt=0)
    min_rel_resolution: float = Field(default=0.01, gt=0, lt=1)
    baseline_s: float = Field(default=1.0, ge=0)
    max_window_s: float = Field(default=120.0, gt=0)
    min_batches: int = Field(default=3, ge=1, description="batches give the interval's spread")
    max_batches: int = Field(default=8, ge=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class LatencyGate(Strict):
    """Offload deployments: end-to-end latency (network included) and the share sent to the server."""

    max_p95_s: float = Field(gt=0)
    max_share_offloaded: float = Field(default=1.0, ge=0, le=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class ConformanceGate(Strict):
    """Cheap first tier for derived candidates (those naming a `base`): GGUF conformance with the base
    and next-token KL divergence from it on a fixed text, as llama.cpp's perplexity tool reports it.
    A candidate that fails it is not sent to the expensive gates."""

    max_kld_mean: float = Field(gt=0)
    max_kld_p99: float = Field(gt=0)
    min_same_top_pct: float = Field(default=0.0, ge=0, le=100)
    n_ctx: int = Field(default=512, ge=64, le=8192)


class Gates(Strict):
    accuracy: AccuracyGate | None = None
    memory: MemoryGate | None = None
    hallucination: HallucinationGate | None = None
    energy: EnergyGate | None = None
    latency: LatencyGate | None = None
    conformance: ConformanceGate | None = None


class Target(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    role: Role
    description: str = ""
    profile: Profile
    gates: Gates

    @model_validator(mode="after")
    def _fits_device(self, info: ValidationInfo) -> Target:
        mem = self.gates.memory
        if mem is not None:
            budget = self.profile.app_memory_budget_mb
            if mem.max_peak_rss_mb > budget:
                raise ValueError(
                    f"gates.memory.max_peak_rss_mb ({mem.max_peak_rss_mb}) exceeds "
                    f"profile.app_memory_budget_mb ({budget})"
                )
            if mem.max_weights_mb > mem.max_peak_rss_mb:
                raise ValueError(
                    f"gates.memory.max_weights_mb ({mem.max_weights_mb}) exceeds max_peak_rss_mb "
                    f"({mem.max_peak_rss_mb}): weights are resident once loaded"
                )
        energy = self.gates.energy
        if energy is not None and energy.require == "any" and energy.meter in ("auto", "estimate") \
                and self.profile.power is None:
            raise ValueError("gates.energy may fall back to an estimate but profile.power is missing")
        if self.gates.latency is not None and self.role != "offload":
            raise ValueError("gates.latency applies to offload targets only")
        if self.gates.latency is not None and self.gates.accuracy is not None \
                and self.gates.accuracy.mode == "sequential":
            # The latency gate (and --compare) reuse the accuracy gate's answers: they need all of them.
            raise ValueError("gates.accuracy.mode: an offload target's latency gate reuses the accuracy gate's "
                             "answers, which a sequential gate may stop early; use mode: fixed here")
        if self.role == "offload" and self.profile.network is None:
            raise ValueError("an offload target needs profile.network (rtt_ms, uplink_mbps, downlink_mbps)")
        expected_role = (info.context or {}).get("role")
        if expected_role and self.role != expected_role:
            raise ValueError(f"role is '{self.role}' but the file lives under thresholds/{expected_role}/")
        return self

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The YAML file this target was read from."""
        return self._source

    @property
    def key(self) -> str:
        """How reports name the target: device targets by name (the common case), others as
        role/name, since every role has its own `default`."""
        return self.name if self.role == "device" else f"{self.role}/{self.name}"


def load_target(path: Path) -> Target:
    role = path.parent.name if path.parent.name in ROLES else None
    target = validate_file(Target, path, context={"role": role})
    target._source = path
    return target


def resolve_target(ref: str, thresholds_dir: Path, role_hint: Role | None = None) -> Target:
    """`ref` is a path to a YAML file, `role/name`, or a bare name searched in every role folder."""
    as_path = Path(ref)
    if as_path.suffix in (".yaml", ".yml") or as_path.is_file():
        return load_target(as_path)
    candidates = [thresholds_dir / f"{ref}.yaml"] if "/" in ref else [
        thresholds_dir / role / f"{ref}.yaml" for role in ((role_hint,) if role_hint else ROLES)
    ]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise ConfigError(f"target '{ref}': no file among {', '.join(str(p) for p in candidates)}")
    return load_target(found[0]) if len(found) == 1 else _ambiguous(ref, found)


def _ambiguous(ref: str, found: list[Path]) -> Target:
    raise ConfigError(f"target '{ref}' is ambiguous: {', '.join(map(str, found))}; name it as role/name")
