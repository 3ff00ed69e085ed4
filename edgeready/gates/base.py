"""What a gate is, and the registry the run, the suite and the markers learn the gates from.

A gate is one module with one class registered by `@register`:

    @register
    class ResponseLength(Gate[LengthConfig, LengthInputs]):
        name = "response_length"            # the YAML key under `gates:` and the pytest marker
        config = LengthConfig               # its schema: a GateConfig subclass (pydantic)
        description = "answers short enough for the UI"

        def gather(self, run, pair, cfg): ...    # what it needs from the run -> inputs
        def measure(self, inputs, cfg): ...      # adapter -> responses -> scores -> Measurement, no threshold
        def judge(self, m, cfg, subject): ...    # Measurement + thresholds -> Judgement (checks, advice)

Data flows one way: `gather` asks the run for models, adapters and shared inputs (the `RunResources`
protocol below), `measure` turns inputs into a Measurement without looking at any threshold (a sequential
gate's threshold is an input of its sampling plan, and the plan is recorded in the measurement), and `judge`
compares a measurement with a target's block, so one measurement can be judged against any target whose
plan matches. Nothing here imports pytest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from edgeready.candidates import Candidate, ResolvedModel
from edgeready.measurement import Judgement, Measurement
from edgeready.schema import ROLES, GateConfig, Pair, Role

if TYPE_CHECKING:
    from edgeready.adapters.base import Adapter
    from edgeready.cache import GenerationStore
    from edgeready.gguf_info import GGUFSummary
    from edgeready.phone import PhoneServer

C = TypeVar("C", bound=GateConfig)
I = TypeVar("I")  # noqa: E741 (the inputs a gate gathers)
T = TypeVar("T")


@dataclass(frozen=True)
class StashKey(Generic[T]):
    """A typed key into what the gates of one run share (pytest's stash idea): gates share inputs through the
    run without the run knowing them, e.g. the accuracy gate's questions, which the latency and memory gates
    reuse. Keys with the same name are the same key."""

    name: str


class RunResources(Protocol):
    """What a gate may ask of the run (edgeready/run.py implements it). Everything is loaded lazily and once."""

    data_dir: Path | None
    limit: int | None
    cache_dir: Path

    def model(self, candidate: Candidate) -> ResolvedModel:
        """The candidate's GGUF on disk with its verified sha256."""
        ...

    def gguf(self, candidate: Candidate) -> GGUFSummary:
        """The candidate's GGUF tensor table and metadata (no load)."""
        ...

    def part(self, owner: Candidate, ref: str) -> Candidate:
        """A candidate that `owner` names (an offload candidate's device or server, a derived model's base)."""
        ...

    def device_candidate(self, pair: Pair) -> Candidate:
        """The model that runs on the device: the candidate, or an offload candidate's device part."""
        ...

    def live(self, pair: Pair) -> Adapter:
        """The pair's adapter, generating afresh (what latency and energy must measure)."""
        ...

    def cached(self, pair: Pair) -> Adapter:
        """The pair's adapter behind the generation store where outputs depend only on the request (device
        role); the live adapter otherwise."""
        ...

    def release(self) -> None:
        """Close the resident model and server (before a probe or a KLD run that loads its own)."""
        ...

    def server_pid(self) -> int | None:
        """The PID of the server the run started for the current pair, if any."""
        ...

    def store(self) -> GenerationStore | None:
        """The generation store (None with --no-cache)."""
        ...

    def provenance(self, pair: Pair) -> dict[str, Any]:
        """The digest (or endpoint) of the model whose outputs a gate measures."""
        ...

    def device_serial(self, pair: Pair) -> str | None:
        """The phone (adb serial) of the target's pool that this worker owns, if the target names any."""
        ...

    def phone(self) -> PhoneServer | None:
        """The phone's server the run started for the current pair, when the target runs on a phone."""
        ...

    def shared(self, key: StashKey[T], factory: Callable[[], T]) -> T:
        """A value shared by the gates of this run, computed once by `factory`."""
        ...


class Gate(ABC, Generic[C, I]):
    """One gate: its name, its schema, and the three steps. Subclass, set the class attributes, and decorate
    with `@register`. Instances hold no state between pairs."""

    name: ClassVar[str]
    config: ClassVar[type[GateConfig]]
    description: ClassVar[str]
    # Where the sign-off report ranks a failure (Allure severity).
    severity: ClassVar[Literal["critical", "normal", "minor"]] = "normal"
    # Roles whose targets may configure it.
    roles: ClassVar[tuple[Role, ...]] = ROLES
    # A first-tier gate runs before the others of its pair; when it does not pass, they are skipped.
    first_tier: ClassVar[bool] = False
    # Run and report order within a pair (ties: registration order); a gate of your own goes after these.
    order: ClassVar[int] = 100

    def applies(self, pair: Pair) -> bool:
        """Whether the gate runs for this pair at all (e.g. conformance only for derived candidates)."""
        return True

    @abstractmethod
    def gather(self, run: RunResources, pair: Pair, cfg: C) -> I:
        """Everything `measure` needs, taken from the run: adapters, items, models, provenance."""

    @abstractmethod
    def measure(self, inputs: I, cfg: C) -> Measurement:
        """Inputs -> responses -> scores -> Measurement. Never compares with a threshold."""

    @abstractmethod
    def judge(self, m: Measurement, cfg: C, subject: Candidate) -> Judgement:
        """Measurement + the target's block -> checks and step-1 advice. `subject` is the model the advice is
        about (an offload deployment's device model)."""


_REGISTRY: dict[str, Gate[Any, Any]] = {}


def register(cls: type[Gate[C, I]]) -> type[Gate[C, I]]:
    """Class decorator: make a gate known to targets, the run, the suite and the markers. Registration order
    breaks ties in `order`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"{cls.__qualname__}.name must be an identifier (it is a YAML key and a marker), got {name!r}")
    if name in ROLES:
        raise TypeError(f"gate name {name!r} collides with a role marker")
    if not (isinstance(getattr(cls, "config", None), type) and issubclass(cls.config, GateConfig)):
        raise TypeError(f"{cls.__qualname__}.config must be a GateConfig subclass")
    if not getattr(cls, "description", ""):
        raise TypeError(f"{cls.__qualname__}.description is empty: it becomes the marker's help")
    known = _REGISTRY.get(name)
    if known is not None and type(known) is not cls:
        raise TypeError(f"gate {name!r} is registered twice: {type(known).__qualname__} and {cls.__qualname__}")
    _REGISTRY[name] = cls()
    return cls


def unregister(name: str) -> None:
    """Forget a gate (tests that register one of their own clean up with this)."""
    _REGISTRY.pop(name, None)


def gates() -> Iterator[Gate[Any, Any]]:
    """Registered gates in run order: first-tier gates, then by `order`, then in registration order."""
    ordered = sorted(enumerate(_REGISTRY.values()), key=lambda ig: (not ig[1].first_tier, ig[1].order, ig[0]))
    return (g for _, g in ordered)


def gate_named(name: str) -> Gate[Any, Any]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no gate named {name!r}; registered: {', '.join(_REGISTRY)}") from None


def gate_names() -> tuple[str, ...]:
    return tuple(g.name for g in gates())
