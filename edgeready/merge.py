"""Merge the reports of shards (`pytest --shard I/N` on N machines) into the reports one run would have written.

    python -m edgeready merge OUT SHARD_DIR...        (or: edgeready merge OUT SHARD_DIR...)

Refused, naming the difference: shards of different edgeready versions, target files or candidates (their
digests), different matrices, a shard that did not finish (its verdict says running, interrupted or error
before any gate), and cells run by two shards or by none. Writes OUT/verdict.json, summary.md, items/ and
allure-results/, and exits as one run would have: 0 when every gate passed, 1 otherwise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgeready.errors import ConfigError
from edgeready.gates import gate_names
from edgeready.measurement import GateResult
from edgeready.report import write_reports
from edgeready.shard import cell_id, record_durations

SAME = ("edgeready",)
SAME_RUN = ("digests", "matrix", "limit", "balanced_by")


def _load(shard: Path) -> dict[str, Any]:
    path = shard / "verdict.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable verdict.json ({type(exc).__name__}: {exc})") from None
    run = doc.get("run") or {}
    if doc.get("overall") in ("running", "interrupted") or "matrix" not in run or "cells" not in run:
        raise ConfigError(f"{shard}: not a finished shard (overall: {doc.get('overall')}; {doc.get('note', '')})")
    return doc  # type: ignore[no-any-return]


def check(shards: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """The matrix the shards cover together, or ConfigError naming what differs, repeats or is missing."""
    (first, ref), *rest = shards
    for shard, doc in rest:
        for key in SAME:
            if doc.get(key) != ref.get(key):
                raise ConfigError(f"{shard} and {first} differ in {key}: {doc.get(key)!r} vs {ref.get(key)!r}")
        for key in SAME_RUN:
            if doc["run"].get(key) != ref["run"].get(key):
                raise ConfigError(f"{shard} and {first} differ in {key} (another command, target file or candidate: "
                                  f"{_diff(doc['run'].get(key), ref['run'].get(key))})")
    owner: dict[str, Path] = {}
    for shard, doc in shards:
        for cell in doc["run"]["cells"]:
            if cell in owner:
                raise ConfigError(f"cell {cell} was run by two shards: {owner[cell]} and {shard}")
            owner[cell] = shard
        ran = {cell_id(g, f"{v['candidate']}@{v['target']}") for v in doc["verdicts"] for g in v["gates"]}
        extra = sorted(ran - set(doc["run"]["cells"]))
        if extra:
            raise ConfigError(f"{shard} has results for cells it was not given: {', '.join(extra)}")
    missing = sorted(set(ref["run"]["matrix"]) - set(owner))
    if missing:
        raise ConfigError(f"no shard ran {len(missing)} cell(s): {', '.join(missing)}")
    return list(ref["run"]["matrix"])


def _diff(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return ", ".join(f"{k}: {_diff(a.get(k), b.get(k))}" if isinstance(a.get(k), dict) else k for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return f"cells only in one: {', '.join(sorted(set(a) ^ set(b)))}"
    return f"{a!r} vs {b!r}"


def merge(out: Path, shard_dirs: list[Path]) -> dict[str, Any]:
    if not shard_dirs:
        raise ConfigError("merge needs at least one shard reports folder")
    shards = [(d, _load(d)) for d in shard_dirs]
    matrix = check(shards)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for shard, doc in shards:
        for v in doc["verdicts"]:
            for g in v["gates"].values():
                result = GateResult.from_json(g)
                result.items_file = _copy(shard / "items", result.items_file, out / "items")
                results.append(result)
        _copy_tree(shard / "allure-results", out / "allure-results")
    order = {name: i for i, name in enumerate(gate_names())}
    results.sort(key=lambda r: (r.candidate, r.target, order.get(r.gate, len(order))))
    ref = shards[0][1]
    # The cells' durations, for balancing the next pipeline's shards: CI saves this file as the cache's.
    durations = {k: v for _, doc in shards for k, v in (doc["run"].get("durations") or {}).items()}
    record_durations(out, durations)
    return write_reports(results, out, {**{k: v for k, v in ref["run"].items()
                                           if k not in ("shard", "cells", "durations")},
                                        "shard": None, "cells": matrix, "merged_from": [str(d) for d in shard_dirs],
                                        "exitstatus": None})


def _copy(folder: Path, items_file: str | None, dest: Path) -> str | None:
    if not items_file:
        return None
    src = folder / Path(items_file).name
    if not src.is_file():
        raise ConfigError(f"{src}: the evidence file its verdict names is missing")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest / src.name)
    return str(dest / src.name)


def _copy_tree(src: Path, dest: Path) -> None:
    """Allure results: every test result of every shard (unique names), one copy of the shared files."""
    if not src.is_dir():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not (dest / f.name).exists():
            shutil.copy2(f, dest / f.name)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m edgeready merge OUT SHARD_DIR...", flush=True)
        return 2
    try:
        doc = merge(Path(argv[0]), [Path(a) for a in argv[1:]])
    except ConfigError as exc:
        print(f"edgeready merge: {exc}", flush=True)
        return 4
    print(f"merged {len(argv) - 1} shards into {argv[0]}: overall {doc['overall']}")
    return 0 if doc["overall"] == "pass" else 1
