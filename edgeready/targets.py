"""Deployment targets: `thresholds/<role>/<name>.yaml`, a profile plus one block per gate.

The shapes live in edgeready/schema.py; the `gates:` block is typed by the gate registry: each registered gate
contributes one optional field whose type is the gate's config class, so a gate of your own is validated like
the built-in ones. Unknown keys, wrong types and thresholds no run could meet are errors that name the file,
key and line (config_errors.py), raised before any model is loaded.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import create_model

from edgeready.config_errors import ConfigError, validate_file, where
from edgeready.datasets.sources import dataset_label, resolve_data_path
from edgeready.gates import gates
from edgeready.schema import ROLES, GateBlocks, GateConfig, Role, SourceSpec, Target

__all__ = ["ROLES", "Role", "Target", "check_run_options", "gate_settings", "load_target", "resolve_target",
           "target_model"]


def target_model() -> type[Target]:
    """The Target schema with one `gates.<name>` field per registered gate (rebuilt when the registry changes)."""
    return _target_model(tuple((g.name, g.config) for g in gates()))


@lru_cache(maxsize=8)
def _target_model(fields: tuple[tuple[str, type[GateConfig]], ...]) -> type[Target]:
    blocks = create_model("Gates", __base__=GateBlocks,  # type: ignore[call-overload]
                          **{name: (config | None, None) for name, config in fields})
    return create_model("Target", __base__=Target, gates=(blocks, ...))  # type: ignore[no-any-return]


def check_run_options(target: Target, blocks: dict[str, GateConfig], limit: int | None,
                      data_dir: Path | None) -> None:
    """What only the run's options tell, for the given gate blocks of `target`: that --limit leaves each a
    chance to pass, and that every data file a block names exists (found now, before any model loads, rather
    than when the gate runs). Raises ConfigError naming the target file, line and key."""
    src = target.source or Path(target.name)
    for name, block in blocks.items():
        if limit is not None:
            try:
                block.check_limit(limit)
            except ValueError as exc:
                raise ConfigError(f"--limit {limit} with target {src}: gates.{name}: {exc}") from None
        for key, spec in block:
            if isinstance(spec, SourceSpec) and spec.path:
                try:
                    resolve_data_path(spec.path, data_dir)
                except ConfigError as exc:
                    raise ConfigError(f"{where(src, ('gates', name, key, 'path'))}: gates.{name}.{key}.path: "
                                      f"{exc}") from None


def gate_settings(target: Target, gate: str) -> dict[str, object]:
    """What a baseline run of `gate` must have used to be compared item by item (edgeready/baseline.py)."""
    block = target.gates.get(gate)
    if block is None:
        return {}
    data = {k: getattr(block, k) for k in ("seed", "max_tokens") if hasattr(block, k)}
    spec = getattr(block, "dataset", None)
    if isinstance(spec, SourceSpec):
        data["dataset"] = dataset_label(spec)
    return data


def load_target(path: Path) -> Target:
    role = path.parent.name if path.parent.name in ROLES else None
    target = validate_file(target_model(), path, context={"role": role})
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
    if len(found) > 1:
        raise ConfigError(f"target '{ref}' is ambiguous: {', '.join(map(str, found))}; name it as role/name")
    return load_target(found[0])
