"""Per-metric history across runs: one JSON line per (run, candidate, target, gate) in reports/history.jsonl.

Allure's own history follows a test's status; this file follows the *value* (accuracy 0.41 -> 0.38 is a
trend long before a gate flips), and it is plain JSON so a notebook can read it too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def history_rows(verdict: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a verdict contributes: value, bounds and status of every gate of every pair."""
    rows = []
    for v in verdict.get("verdicts", []):
        for gate, g in v.get("gates", {}).items():
            iv = g.get("interval") or {}
            rows.append({
                "run": verdict.get("created"),  # one id per gate run: verdict.json's creation time
                "timestamp": verdict.get("created"),
                "candidate": v["candidate"],
                "target": v["target"],
                "role": v.get("role"),
                "gate": gate,
                "value": _finite(g.get("value")),
                "low": _finite(iv.get("low")),
                "high": _finite(iv.get("high")),
                "unit": g.get("unit"),
                "status": g.get("status"),
            })
    return rows


def _finite(x: Any) -> float | None:
    # JSON has no Infinity: an unbounded bound is written as null rather than as a non-standard token.
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a killed run must not lose the rest
                continue
    return rows


def append_history(verdict: dict[str, Any], path: Path) -> int:
    """Append the verdict's rows; a run already recorded is not recorded twice (rendering the report
    again for the same verdict.json must not make a flat line out of one run). Returns rows written."""
    seen = {(r.get("run"), r.get("candidate"), r.get("target"), r.get("gate")) for r in read_history(path)}
    new = [r for r in history_rows(verdict) if (r["run"], r["candidate"], r["target"], r["gate"]) not in seen]
    if new:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            for r in new:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(new)


def merge_jsonl(src: Path, dst: Path) -> int:
    """Add the lines of `src` that `dst` lacks (order: dst's, then src's new ones). For restoring a
    history file from a previous report: a CI job starts with an empty reports/. Returns lines added."""
    if not src.is_file():
        return 0
    have = dst.read_text(encoding="utf-8").splitlines() if dst.is_file() else []
    known = set(have)
    new = [x for x in src.read_text(encoding="utf-8").splitlines() if x.strip() and x not in known]
    if not new:
        return 0
    # Readers (Allure's included) take the last lines as the latest runs: keep the file chronological.
    merged = sorted([*new, *have], key=_timestamp_key)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(x + "\n" for x in merged), encoding="utf-8")
    return len(new)


def _timestamp_key(line: str) -> tuple[int, str]:
    """Allure's history lines carry epoch milliseconds, ours ISO strings; both sort as text once
    zero-padded. A line without a timestamp sorts first (stable sort keeps its place among equals)."""
    try:
        ts = json.loads(line).get("timestamp")
    except (json.JSONDecodeError, AttributeError):
        return (0, "")
    if isinstance(ts, int | float):
        return (1, f"{ts:020.0f}")
    return (1, str(ts)) if isinstance(ts, str) else (0, "")
