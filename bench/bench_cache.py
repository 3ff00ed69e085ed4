"""A re-run served by the generation store vs the first run, and what the re-run still pays for.

    .venv/bin/python bench/bench_cache.py [--limit N] [--only accuracy,generation,gate] [--json FILE]

Each configuration runs the default device target twice with one fresh --cache-dir: the first run fills the
store (generations and sentence scores), the second finds everything there. Ratio = second wall / first wall,
both measured from process start to exit (pytest, the plugin, the gates, the reports).

- `accuracy`: `-m "device and accuracy"` (120 questions): one short gate, where start-up dominates a re-run.
- `generation`: `-m "device and (accuracy or hallucination)"`: every gate whose cost is generating text,
  the work the store exists to skip. The goal (<= 5 %) is judged here.
- `gate`: `-m device`, all of `make gate`. The memory and energy gates measure the machine, so they run
  again on every run by design (a stored peak or energy reading would not be a measurement of this run);
  this ratio says what a re-run of `make gate` costs with them.

The fresh cache dir gets the assembled model before the first run (edgeready.candidates.materialize, timed
and reported apart): --cache-dir also holds the assembled GGUF, and counting that one-off copy in the first
run would flatter the ratio.

What a re-run still pays, each measured: interpreter + pytest + plugin + collection (a `--collect-only` run
with the same arguments); each gate's own measurement wall time; and the rest (judging, reports, teardown).
Whether the model was loaded at all is read from the measurement's provenance.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_common import DEFAULT_CANDIDATE, ROOT, Stopwatch, emit, machine

GOAL = 0.05
CONFIGS = {
    "accuracy": "device and accuracy",
    "generation": "device and (accuracy or hallucination)",
    "gate": "device",
}
JUDGED = "generation"


def gate_args(marker: str, cache: Path, reports: Path, limit: int | None) -> list[str]:
    args = ["-m", marker, f"--cache-dir={cache}", f"--reports={reports}"]
    return args + ([f"--limit={limit}"] if limit else [])


def timed_run(args: list[str]) -> tuple[float, Any]:
    from tests.conftest import run_gate

    with Stopwatch() as sw:
        proc = run_gate(*args, timeout=3600)
    return sw.s, proc


def gates_of(reports: Path) -> dict[str, Any]:
    import json

    return json.loads((reports / "verdict.json").read_text())["verdicts"][0]["gates"]


def measure_seconds(gate: str, details: dict[str, Any]) -> float | None:
    """The gate's own measuring time as its measurement records it (None where it records none)."""
    if gate == "hallucination":
        return round((details.get("generation_s") or 0) + (details.get("scoring_s") or 0), 3)
    return details.get({"accuracy": "wall_s", "memory": "probe_wall_s"}.get(gate, ""))


def one_config(name: str, marker: str, tmp: Path, limit: int | None) -> dict[str, Any]:
    from edgeready.candidates import materialize, resolve_candidate

    cache = tmp / name / "cache"
    with Stopwatch() as prep:
        materialize(resolve_candidate(DEFAULT_CANDIDATE, ROOT / "candidates"), cache)
    first_s, first_proc = timed_run(gate_args(marker, cache, tmp / name / "first", limit))
    second_s, second_proc = timed_run(gate_args(marker, cache, tmp / name / "second", limit))
    collect_s, _ = timed_run([*gate_args(marker, cache, tmp / name / "collect", limit), "--collect-only", "-q"])
    for run, proc in (("first", first_proc), ("second", second_proc)):
        if not (tmp / name / run / "verdict.json").is_file():
            raise RuntimeError(f"{name}: the {run} run wrote no verdict (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
    a, b = gates_of(tmp / name / "first"), gates_of(tmp / name / "second")
    per_gate = {}
    for gate in a:
        mb = b[gate].get("measurement") or {}
        db = mb.get("details", {})
        per_gate[gate] = {
            "status": [a[gate]["status"], b[gate]["status"]],
            "value": [a[gate]["value"], b[gate]["value"]],
            "cache_hits_second": db.get("cache_hits"),
            "score_cache_hits_second": db.get("score_cache_hits"),
            "model_loaded_second": (mb.get("provenance", {}).get("adapter") or {}).get("loaded"),
            "measure_s_second": measure_seconds(gate, db),
        }
    # Accuracy and hallucination come from the store and must be identical; memory and energy are measured
    # again, so only their status is compared.
    same = all(a[g]["status"] == b[g]["status"] and (g not in ("accuracy", "hallucination")
                                                      or a[g]["value"] == b[g]["value"]) for g in a)
    measured = sum(g["measure_s_second"] or 0 for g in per_gate.values())
    ratio = second_s / first_s
    out = {
        "marker": marker, "first_s": round(first_s, 2), "second_s": round(second_s, 2), "ratio": round(ratio, 4),
        "rc": [first_proc.returncode, second_proc.returncode], "same_verdicts": same, "gates": per_gate,
        "model_assembly_s_before_first": round(prep.s, 2),
        "second_breakdown_s": {"startup_pytest_plugin_collection": round(collect_s, 2),
                               "gate_measurements_recorded": round(measured, 2),
                               "rest": round(second_s - collect_s - measured, 2)},
    }
    print(f"{name:10s} first {first_s:7.2f} s, second {second_s:6.2f} s, ratio {ratio:.3f}; same verdicts: {same}; "
          f"second run: {out['second_breakdown_s']}", flush=True)
    for gate, g in per_gate.items():
        print(f"  {gate:13s} {g['status']} hits {g['cache_hits_second']} score hits {g['score_cache_hits_second']} "
              f"model loaded {g['model_loaded_second']} measure {g['measure_s_second']} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="fewer items per gate (smoke test)")
    ap.add_argument("--only", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if any(n not in CONFIGS for n in names):
        ap.error(f"choose from {list(CONFIGS)}")
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="edgeready-bench-cache-"))
    try:
        configs = {name: one_config(name, CONFIGS[name], tmp, args.limit) for name in names}
    except RuntimeError as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    judged = configs.get(JUDGED)
    result: dict[str, Any] = {
        "benchmark": "cache",
        "what": "second run (everything stored) / first run (empty store), default device target",
        "configs": configs,
        "judged": JUDGED if judged else None,
        "ratio": judged["ratio"] if judged else None,
        "goal": f"second/first <= {GOAL} for the gates whose cost is generation ({CONFIGS[JUDGED]})",
        "goal_met": bool(judged and judged["ratio"] <= GOAL),
        "machine": info,
        "loadavg_end": machine()["loadavg_1_5_15"],
    }
    if judged:
        print(f"goal second/first <= {GOAL} ({JUDGED}): {judged['ratio']:.3f}, "
              f"{'met' if result['goal_met'] else 'NOT met'}")
    emit(result, args.json)
    return 0 if all(c["same_verdicts"] for c in configs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
