"""The shapes every layer shares: a target's profile, where a gate's inputs come from, a gate's sampling
plan, the target itself and the (candidate, target) pair. Pydantic models, validated before any model loads.

A target's gate blocks are typed by the gates themselves: each gate module declares its config class
(edgeready/gates/), and edgeready/targets.py builds the `gates:` schema from the gate registry when it loads
a file. This module knows no gate, so every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

if TYPE_CHECKING:
    from edgeready.baseline import BaselineRun
    from edgeready.candidates import Candidate

Role = Literal["device", "server", "offload"]
ROLES: tuple[Role, ...] = ("device", "server", "offload")


class Strict(BaseModel):
    """Unknown keys are errors (a misspelled threshold must never be ignored); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GateConfig(Strict):
    """A gate's block in a target. Gate modules subclass it; the hooks below let a block check what it needs
    from the rest of the target and from the run's options, so the check lives with the gate."""

    def check_target(self, target: Target) -> None:
        """Raise ValueError when this block cannot work in `target` (e.g. a limit above the memory budget)."""

    def check_limit(self, n: int) -> None:
        """Raise ValueError when no run of `n` items (--limit) could pass this block."""

    # Whether the gate can judge a candidate against a baseline on the same items (target `baseline:`).
    supports_baseline: ClassVar[bool] = False

    def check_margin(self, margin: float) -> None:
        """Raise ValueError when no run of this block could show a loss below `margin` against a baseline."""


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


# What an on-device server command may name; each is filled in when the run starts it.
PHONE_PLACEHOLDERS = ("workdir", "model", "port", "threads", "n_ctx", "n_batch", "parallel", "alias")
# llama.cpp's `llama-server` built for Android (build-android/bin/llama-server and its .so files), pushed to the
# working folder: users bring the build they ship, so every argument can be replaced in the target.
DEFAULT_PHONE_SERVER = (
    "{workdir}/llama-server", "-m", "{model}", "--host", "127.0.0.1", "--port", "{port}", "-t", "{threads}",
    "-c", "{n_ctx}", "-b", "{n_batch}", "-np", "{parallel}", "--alias", "{alias}",
)


class Phone(Strict):
    """`profile.phone`: run the model on an Android phone over adb instead of on the host (edgeready/phone.py).
    The run pushes the GGUF into `workdir`, starts `server` there, forwards its port and sends the gates'
    requests through it; memory, energy, speed and heat are then read on the phone."""

    adb: str = Field(default="adb", description="the adb binary on the host (a path or a name on PATH)")
    # None: profile.adb_serials (this worker's phone of the pool), else the only device attached.
    serial: str | None = None
    workdir: str = Field(default="/data/local/tmp/edgeready",
                         description="the one folder on the phone the run writes to (shell-writable, no root)")
    server: tuple[str, ...] = DEFAULT_PHONE_SERVER
    env: dict[str, str] = Field(default_factory=lambda: {"LD_LIBRARY_PATH": "{workdir}"})
    port: int = Field(default=8080, ge=1024, le=65535, description="the server's port on the phone")
    startup_timeout_s: float = Field(default=180.0, gt=0, le=3600)
    request_timeout_s: float = Field(default=120.0, gt=0, le=3600, description="one request, first byte to last")
    # Refuse to start unless the screen is in this state (`dumpsys power`): "off" keeps the display's power out
    # of the fuel gauge's reading and the phone from being used during a run.
    screen: Literal["off", "on", "any"] = "any"
    # Packages that may be in the foreground (`dumpsys activity`); None: not checked. Another app in front
    # competes for the cores and the memory the run measures.
    foreground: tuple[str, ...] | None = None
    # Refuse to start unless the battery is discharging (a measured energy gate needs it: on USB power the fuel
    # gauge sees the charger's current). Use adb over Wi-Fi with the cable out.
    on_battery: bool = False

    @model_validator(mode="after")
    def _safe(self) -> Phone:
        import re

        w = self.workdir
        if not w.startswith("/") or w.rstrip("/") in ("", "/data", "/data/local", "/data/local/tmp", "/sdcard") \
                or ".." in w.split("/") or not re.fullmatch(r"[A-Za-z0-9_./-]+", w):
            raise ValueError(f"workdir {w!r}: an absolute folder of its own (letters, digits, _ . - /), e.g. "
                             "/data/local/tmp/edgeready; the run writes and deletes only there")
        if not self.server:
            raise ValueError("server: the on-device server's command is empty")
        bad = [k for k in self.env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
        if bad:
            raise ValueError(f"env: {bad[0]!r} is not an environment variable name")
        fill = {k: "0" for k in PHONE_PLACEHOLDERS}
        for key, texts in (("server", self.server), ("env", tuple(self.env.values()))):
            for text in texts:
                try:
                    text.format(**fill)
                except (KeyError, IndexError, ValueError) as exc:
                    raise ValueError(f"{key}: {text!r} names {exc} which is not one of "
                                     f"{{{', '.join(PHONE_PLACEHOLDERS)}}}") from None
        if "{port}" not in " ".join(self.server):
            raise ValueError("server: the command must listen on {port} (the run forwards that port)")
        return self


class Profile(Strict):
    device: str = Field(description="Human name of the hardware, e.g. 'Xiaomi 10 Ultra (Snapdragon 865)'")
    ram_mb: float = Field(gt=0, description="Physical RAM of the device")
    app_memory_budget_mb: float = Field(gt=0, description="What the app hosting the model may use")
    threads: int = Field(ge=1, le=256)
    n_ctx: int = Field(ge=128, le=1_048_576)
    # Prompt tokens per decode. It sizes llama.cpp's compute buffer (n_batch x n_vocab logits), so
    # it is a memory setting as much as a speed one; 64 keeps Gemma's 262k vocabulary at 64 MiB.
    n_batch: int = Field(default=64, ge=1, le=4096)
    # Sequences the device adapter decodes together in one llama.cpp batch (llama-server's slots): each gets
    # n_ctx / parallel KV cells. 1 = one at a time. Answers may differ from parallel 1 (README "Batched
    # decoding"), so the generation store keys them apart; the memory gate measures with the same setting.
    parallel: int = Field(default=1, ge=1, le=64)
    battery: Battery | None = None
    power: PowerModel | None = None
    network: NetworkProfile | None = None
    # A pool of identical phones (adb serials): with `pytest -n K` each xdist worker owns one for its whole run
    # (worker i meters adb_serials[i % len]), so no two workers share a phone; a serial run uses the first.
    adb_serials: tuple[str, ...] = ()
    # Run the model on the phone itself (over adb) rather than on the host that runs pytest.
    phone: Phone | None = None

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


# Keys that mean something only to a sequential gate: given to a fixed one, they are an error, not ignored.
_SEQUENTIAL_ONLY = frozenset({"max_items", "round_size", "delta", "power", "test"})


class SequentialOptions(GateConfig):
    """How a gate spends its items. `fixed` scores `sample_size` items and compares a bound; `sequential`
    scores rounds of `round_size` and stops as soon as an always-valid test decides at the target's error
    rates (edgeready/sequential/, docs/SEQUENTIAL.md), after at most `max_items` (default: sample_size).
    alpha = 1 - confidence bounds the chance of passing a candidate that misses the threshold; beta = 1 - power
    bounds the chance of failing one that beats it by `delta` (the indifference margin).

    `sample_size` and `max_items` are at most `_MAX_ITEMS` (10,000): the largest dataset here has 4,737
    questions, and a sequential gate's exact power check, run when the target loads, walks every look up to
    the budget (at a million items it ran for minutes, printing nothing)."""

    _MAX_ITEMS = 10_000

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
        # Checked first (a parent's validator runs before its subclasses'), so no power check sees a huge budget.
        for key in ("sample_size", "max_items"):
            value = getattr(self, key)
            if value is not None and value > self._MAX_ITEMS:
                raise ValueError(f"{key} {value} is above the limit of {self._MAX_ITEMS:,} items a gate may score "
                                 f"(the largest dataset here has a few thousand); use at most {self._MAX_ITEMS}")
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


class Baseline(Strict):
    """`baseline:` the model a candidate replaces (the base, or the last release) and, per gate, how much the
    candidate may lose against it on the same items (a non-inferiority margin in the gate's units: 0.05 =
    five points of accuracy). `--baseline` gives or overrides `candidate`: a candidate name, a manifest or
    GGUF path, or the reports folder of an earlier run (read without loading any model)."""

    candidate: str | None = None
    margins: dict[str, float] = Field(min_length=1)
    # Where beta is controlled, as a share of the margin: 0 (the usual non-inferiority design) = a candidate
    # that loses nothing is failed with probability at most beta; 0.5 = one that loses up to half the margin.
    power_at: float = Field(default=0.0, ge=0, lt=1, description="loss, as a share of the margin, at which "
                            "beta is controlled (0: a candidate that loses nothing)")

    @model_validator(mode="after")
    def _margins(self) -> Baseline:
        for gate, margin in self.margins.items():
            if not 0 < margin < 1:
                raise ValueError(f"margins.{gate}: {margin} must be within (0, 1) (0.05 = five points)")
        return self


class GateBlocks(Strict):
    """The `gates:` block of a target: one optional field per registered gate. The class with those fields is
    built from the registry when a target is loaded (edgeready/targets.py); this base has none."""

    def get(self, name: str) -> GateConfig | None:
        """The block of gate `name`, or None when the target does not configure it."""
        return self.__dict__.get(name)

    def configured(self) -> dict[str, GateConfig]:
        """The blocks this target sets, by gate name."""
        return {name: block for name, block in self.__dict__.items() if block is not None}


class Target(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    role: Role
    description: str = ""
    profile: Profile
    gates: GateBlocks
    baseline: Baseline | None = None

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Target:
        for block in self.gates.configured().values():
            block.check_target(self)
        for gate in (self.baseline.margins if self.baseline else {}):
            block = self.gates.get(gate)
            if block is None or not block.supports_baseline:
                can = sorted(n for n, b in self.gates.configured().items() if b.supports_baseline)
                raise ValueError(f"baseline.margins.{gate}: no {gate} gate here compares with a baseline "
                                 f"(gates that can: {', '.join(can) or 'none'})")
            try:
                block.check_margin(self.baseline.margins[gate])  # type: ignore[union-attr]
            except ValueError as exc:
                raise ValueError(f"baseline.margins.{gate}: {exc}") from None
        if self.profile.phone is not None and self.role != "device":
            raise ValueError(f"profile.phone runs a device model on a phone: a {self.role} target cannot use it")
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


def runs_on(candidate: Candidate, role: Role) -> bool:
    """GGUF candidates run in-process on a device or behind a llama.cpp server the run starts;
    endpoints are servers already running; offload candidates are judged by offload targets."""
    if candidate.format == "gguf":
        return role in ("device", "server")
    if candidate.format == "hf":  # transformers in the suite's own process; no server serves a checkpoint here
        return role == "device"
    if candidate.format == "endpoint":
        return role == "server"
    return role == "offload"


@dataclass(frozen=True)
class Pair:
    """One candidate judged against one target: the unit every gate runs on. `baseline`: what the candidate
    is compared with on the same items, when the target has a `baseline:` block (a candidate, or an earlier
    run's recorded answers)."""

    candidate: Candidate
    target: Target
    baseline: Candidate | BaselineRun | None = None

    @property
    def id(self) -> str:
        return f"{self.candidate.name}@{self.target.key}"

    def with_parallel(self, parallel: int) -> Pair:
        """The pair with its profile decoding `parallel` sequences together (a gate's own decoding setting; the
        store keys answers by it)."""
        prof = self.target.profile
        if prof.parallel == parallel:
            return self
        target = self.target.model_copy(update={"profile": prof.model_copy(update={"parallel": parallel})})
        return replace(self, target=target)

    @property
    def role(self) -> Role:
        return self.target.role
