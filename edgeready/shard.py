"""Shards: N CI jobs on N machines that together run every (candidate x target x gate) cell exactly once.

A shard takes whole (candidate, target) pairs: the gates of a pair share one model load and its first-tier
gate decides whether the others run, so splitting a pair would cost a load and lose that rule. Pairs are
assigned by longest-processing-time-first: heaviest pair to the least-loaded shard, ties by name, which is
deterministic for the same inputs, so every job computes the same assignment without talking to the others.
A pair's weight is the recorded duration of its cells in earlier runs (`durations.json` in the cache folder,
which CI restores for every job); a cell never recorded weighs the mean of those that were (1 when none was).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from edgeready.errors import ConfigError

DURATIONS = "durations.json"


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` with 1 <= I <= N."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise ConfigError(f"--shard {text}: I must be within 1..N")
    return i, n


def cell_id(gate: str, pair_id: str) -> str:
    return f"{gate}:{pair_id}"


def pair_of(cell: str) -> str:
    return cell.split(":", 1)[1]


def assign(cells: Iterable[str], shards: int, durations: Mapping[str, float]) -> dict[str, int]:
    """The shard (1-based) of each pair, balanced by the cells' recorded durations."""
    cells = sorted(set(cells))
    known = [durations[c] for c in cells if c in durations]
    default = sum(known) / len(known) if known else 1.0
    weight: dict[str, float] = {}
    for c in cells:
        weight[pair_of(c)] = weight.get(pair_of(c), 0.0) + durations.get(c, default)
    load = [0.0] * shards
    out = {}
    for pair in sorted(weight, key=lambda p: (-weight[p], p)):
        target = min(range(shards), key=lambda s: (load[s], s))
        load[target] += weight[pair]
        out[pair] = target + 1
    return out


def load_durations(cache_dir: Path) -> dict[str, float]:
    path = cache_dir / DURATIONS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none recorded yet (or unreadable): balance by count
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)}


def record_durations(cache_dir: Path, measured: Mapping[str, float]) -> None:
    """Keep the latest duration of each cell measured now, beside the earlier ones (atomically)."""
    if not measured:
        return
    data = {**load_durations(cache_dir), **{k: round(v, 3) for k, v in measured.items()}}
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{DURATIONS}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(cache_dir / DURATIONS)
