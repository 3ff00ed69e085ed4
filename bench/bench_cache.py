"""A re-run served by the generation cache vs the first run, and what the re-run still pays for.

    .venv/bin/python bench/bench_cache.py [--limit N] [--json FILE]

Two runs of `run_gate("-m", "device and accuracy", "--cache-dir=<fresh dir>", ...)` (tests/conftest.py) on
the default device target (thresholds/device/default.yaml: 120 questions, 2 threads): the first fills the
generation store, the second finds every answer there. Ratio = second wall / first wall.

The fresh cache dir gets the assembled model before the first run (edgeready.candidates.materialize,
timed and reported apart): --cache-dir also holds the assembled GGUF and its digest, and counting that
one-off copy in the first run would flatter the ratio. So both runs start with the model on disk and an
empty (then full) generation store; the only difference is generation.

What the second run still pays, each measured, not estimated:
- interpreter + pytest + the edgeready plugin + collection: a `--collect-only` run with the same arguments;
- the model load: `load_s` from the accuracy measurement's provenance (the cached run still constructs
  LlamaCppDevice, because the cache key includes the runtime's settings and build flags read from it);
- the gate itself: the measurement's `wall_s` (cache lookups, scoring, Wilson);
- the rest (judging, verdict.json, summary.md, Allure results, teardown): the remainder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_common import DEFAULT_CANDIDATE, ROOT, Stopwatch, emit, machine, verdict_gate

GOAL = 0.05


def gate_args(cache: Path, reports: Path, limit: int | None) -> list[str]:
    args = ["-m", "device and accuracy", f"--cache-dir={cache}", f"--reports={reports}"]
    return args + ([f"--limit={limit}"] if limit else [])


def timed_run(args: list[str]) -> tuple[float, Any]:
    from tests.conftest import run_gate

    with Stopwatch() as sw:
        proc = run_gate(*args, timeout=1800)
    return sw.s, proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="fewer questions (smoke test); default: the target's 120")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    info = machine()

    from edgeready.candidates import materialize, resolve_candidate

    tmp = Path(tempfile.mkdtemp(prefix="edgeready-bench-cache-"))
    try:
        cache = tmp / "cache"
        with Stopwatch() as prep:
            materialize(resolve_candidate(DEFAULT_CANDIDATE, ROOT / "candidates"), cache)
        print(f"# fresh --cache-dir {cache}: model assembled and digested in {prep.s:.2f} s (before run 1, not timed)")

        first_s, first_proc = timed_run(gate_args(cache, tmp / "first", args.limit))
        second_s, second_proc = timed_run(gate_args(cache, tmp / "second", args.limit))
        collect_s, collect_proc = timed_run([*gate_args(cache, tmp / "collect", args.limit), "--collect-only", "-q"])
        for name, proc in (("first", first_proc), ("second", second_proc)):
            if not (tmp / name / "verdict.json").is_file():
                print(f"FAILED: the {name} run wrote no verdict (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
                return 1
        a, b = verdict_gate(tmp / "first"), verdict_gate(tmp / "second")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    da, db = a["measurement"]["details"], b["measurement"]["details"]
    load_a = a["measurement"]["provenance"]["adapter"]["load_s"]
    load_b = b["measurement"]["provenance"]["adapter"]["load_s"]
    rest_b = second_s - collect_s - load_b - db["wall_s"]
    same = (a["value"], a["status"]) == (b["value"], b["status"])
    ratio = second_s / first_s
    result: dict[str, Any] = {
        "benchmark": "cache",
        "what": "second run (all cache hits) / first run (empty store), default device target, accuracy gate",
        "n": a["n"],
        "first_s": round(first_s, 2),
        "second_s": round(second_s, 2),
        "ratio": round(ratio, 4),
        "first_rc": first_proc.returncode,
        "second_rc": second_proc.returncode,
        "cache_hits": {"first": da["cache_hits"], "second": db["cache_hits"]},
        "same_verdict": same,
        "verdict": {"status": b["status"], "value": b["value"]},
        "model_assembly_s_before_first": round(prep.s, 2),
        "second_breakdown_s": {
            "startup_pytest_plugin_collection": round(collect_s, 2),
            "model_load": round(load_b, 3),
            "gate_measurement_wall": round(db["wall_s"], 3),
            "rest_judge_reports_teardown": round(rest_b, 2),
        },
        "first_breakdown_s": {"model_load": round(load_a, 3), "gate_measurement_wall": round(da["wall_s"], 3)},
        "collect_rc": collect_proc.returncode,
        "goal": f"second/first <= {GOAL}",
        "goal_met": ratio <= GOAL,
        "machine": info,
        "loadavg_end": machine()["loadavg_1_5_15"],
    }
    print(f"first run {first_s:.2f} s (cache hits {da['cache_hits']}/{a['n']}, gate {da['wall_s']:.2f} s), "
          f"second run {second_s:.2f} s (hits {db['cache_hits']}/{b['n']}, gate {db['wall_s']:.3f} s); "
          f"same verdict: {same}")
    print(f"ratio second/first {ratio:.3f}; goal <= {GOAL}: {'met' if result['goal_met'] else 'NOT met'}")
    print(f"second run breakdown (s): {result['second_breakdown_s']}")
    emit(result, args.json)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
