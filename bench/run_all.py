"""Run the four benchmarks, one after another, and print one table of their ratios.

    .venv/bin/python bench/run_all.py [--only overhead,lm_eval,sequential,cache] [--out DIR]

Each benchmark runs in its own process (so one's memory and threads never weigh on the next) and
reports a `BENCH_RESULT {json}` line; they run one at a time because the host's cores are shared and two
benchmarks at once would measure each other. Prints the machine (CPU model from /proc/cpuinfo, cores,
load), the date and the versions, then the table; writes results.json and summary.md under --out
(default reports/bench/). Exit status 1 when a benchmark failed to produce numbers (its row says why).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import RESULT_PREFIX, ROOT, machine

BENCH = Path(__file__).resolve().parent
# name -> (script, extra arguments). The overhead benchmark also times the adapter with a 16-token prompt
# chunk: a diagnostic of where its overhead comes from (see docs/PERFORMANCE.md).
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "overhead": ("bench_overhead.py", ["--extra-chunk", "16"]),
    "lm_eval": ("bench_lm_eval.py", []),
    "sequential": ("bench_sequential.py", []),
    "cache": ("bench_cache.py", []),
}


def run_one(name: str, out: Path) -> dict[str, Any]:
    script, extra = BENCHMARKS[name]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(BENCH / script), *extra, "--json", str(out / f"{name}.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - started
    (out / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"benchmark": name, "error": f"exit {proc.returncode}: {tail[:300]}", "elapsed_s": round(elapsed, 1)}
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["elapsed_s"] = round(elapsed, 1)
    return result


def rows_for(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, ratio, goal, met) rows of one benchmark's result."""
    name = r["benchmark"]
    if "error" in r:
        return [(name, "-", "-", f"no numbers: {r['error']}")]

    def yn(ok: bool) -> str:
        return "yes" if ok else "no"

    if name == "overhead":
        rows = [(f"overhead: suite/raw llama-cpp-python, s per question ({r['n_questions']} q x {r['repeats']}, "
                 f"median of {r['block_pairs']} interleaved block pairs, 1 thread)", f"{r['median_ratio']:.3f}",
                 "<= 1.05", yn(r["goal_met"]))]
        for key in (k for k in r if k.endswith("_median_ratio_diagnostic")):
            rows.append((f"  diagnostic: {key.removesuffix('_median_ratio_diagnostic')}/raw", f"{r[key]:.3f}",
                         "-", "-"))
        return rows
    if name == "lm_eval":
        rows = []
        for backend, label in (("inproc", "in-process LM, bundled tasks not indexed"),
                               ("server", "CLI local-completions + llama_cpp.server")):
            if f"ratio_vs_{backend}" in r:
                rows.append((f"lm-eval: edgeready/lm-eval time to verdict ({r['n_questions']} q; {label})",
                             f"{r[f'ratio_vs_{backend}']:.3f}", "<= 0.5", yn(r[f"ratio_vs_{backend}"] <= 0.5)))
        return rows
    if name == "sequential":
        rows = [
            ("sequential: items seq/fixed, +5 points, same cap n=120 (sim)", f"{r['ratio_plus5_n120_same_cap']:.3f}",
             "<= 0.40", yn(r["ratio_plus5_n120_same_cap"] <= 0.4)),
            ("sequential: items seq/fixed, -5 points, same cap n=120 (sim)", f"{r['ratio_minus5_n120_same_cap']:.3f}",
             "<= 0.40", yn(r["ratio_minus5_n120_same_cap"] <= 0.4)),
        ]
        eq = r["ratio_plus5_n120_equal_error"]
        rows.append(("sequential: items seq/fixed, +5 points, equal error rates, fixed n=120 (sim)",
                     f"{eq:.3f}" if eq is not None else "n/a", "<= 0.40", yn(eq is not None and eq <= 0.4)))
        rows.append(("sequential: smallest fixed n where +5 / -5 points reach <= 0.40 (sim)",
                     f"{r['n_goal_met_above_equal_error']} / {r['n_goal_met_below']}", "-", "-"))
        for gap in (0.2, -0.2):
            row = next(x for x in r["same_budget_120"] if abs(x["gap"] - gap) < 1e-9)
            rows.append((f"sequential: items seq/fixed, {gap * 100:+.0f} points, n=120 (sim)", f"{row['ratio']:.3f}",
                         "-", "-"))
        real = r.get("real")
        if real:
            rows.append((f"sequential: real Gemma run, min 0.45 ({real['seq-045']['status']} vs fixed "
                         f"{real['fixed-045']['status']}, accuracy {real['fixed-045']['accuracy']:.3f})",
                         f"{real['ratio_045']:.3f}", "<= 0.40", yn(real["ratio_045"] <= 0.4)))
            rows.append((f"sequential: real Gemma run, min 0.30 ({real['seq-030']['status']} vs fixed "
                         f"{real['fixed-030']['status']})", f"{real['ratio_030']:.3f}", "-", "-"))
        return rows
    if name == "cache":
        return [(f"cache: second/first wall, default target accuracy gate (n={r['n']}, "
                 f"{r['cache_hits']['second']} hits)", f"{r['ratio']:.3f}", "<= 0.05", yn(r["goal_met"]))]
    return [(name, "?", "?", "?")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench"))
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    info = machine()
    header = [
        f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable), {info['system']}",
        f"date: {info['date']}; load average at start (1/5/15 min): {info['loadavg_1_5_15']}",
        f"versions: python {info['python']}, " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v),
        f"code: {info['git']}",
    ]
    print("\n".join(header), flush=True)
    results = []
    for name in names:
        print(f"running {name} ...", flush=True)
        res = run_one(name, out)
        results.append(res)
        print(f"  {name}: {'FAILED ' + res['error'] if 'error' in res else 'done'} in {res['elapsed_s']} s", flush=True)
    end_load = machine()["loadavg_1_5_15"]

    table = ["| measurement | ratio | goal | met |", "|---|---|---|---|"]
    for res in results:
        table += [f"| {what} | {ratio} | {goal} | {met} |" for what, ratio, goal, met in rows_for(res)]
    text = "\n".join([*header, f"load average at end: {end_load}", "", *table])
    print("\n" + "\n".join(table))
    (out / "summary.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"machine": info, "loadavg_end": end_load, "results": results},
                                                 indent=2, default=str) + "\n")
    print(f"\nwritten: {out / 'summary.md'}, {out / 'results.json'} (logs: {out}/<name>.log)")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
