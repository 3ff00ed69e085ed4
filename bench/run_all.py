"""Run the six benchmarks, one after another, and print one table of their ratios.

    .venv/bin/python bench/run_all.py [--only overhead,lm_eval,sequential,cache,paired,batched] [--out DIR]

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
GOAL_SEQUENTIAL = 0.40
# name -> (script, extra arguments). The overhead benchmark also times the adapter with a 16-token prompt
# chunk: a diagnostic of where its overhead comes from (see docs/PERFORMANCE.md).
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "overhead": ("bench_overhead.py", ["--extra-chunk", "16"]),
    "lm_eval": ("bench_lm_eval.py", []),
    "sequential": ("bench_sequential.py", []),
    "cache": ("bench_cache.py", []),
    "paired": ("bench_paired.py", []),
    "batched": ("bench_batched.py", []),
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


Row = tuple[str, str, str, str]


def _yn(ok: bool) -> str:
    return "yes" if ok else "no"


def _overhead_rows(r: dict[str, Any]) -> list[Row]:
    rows = [(f"overhead: suite/raw llama-cpp-python, s per question ({r['n_questions']} q x {r['repeats']}, "
             f"median of {r['block_pairs']} interleaved block pairs, 1 thread)", f"{r['median_ratio']:.3f}",
             "<= 1.05", _yn(r["goal_met"]))]
    for key in (k for k in r if k.endswith("_median_ratio_diagnostic")):
        rows.append((f"  diagnostic: {key.removesuffix('_median_ratio_diagnostic')}/raw", f"{r[key]:.3f}", "-", "-"))
    return rows


def _lm_eval_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for backend, label in (("inproc", "in-process LM, bundled tasks not indexed"),
                           ("server", "CLI local-completions + llama_cpp.server")):
        if f"ratio_vs_{backend}" in r:
            goal = 0.25 if backend == "inproc" else 0.5  # issue 16: the in-process LM is the headline
            rows.append((f"lm-eval: edgeready (parallel {r.get('edgeready_parallel', 1)}) / lm-eval time to verdict "
                         f"({r['n_questions']} q; {label})", f"{r[f'ratio_vs_{backend}']:.3f}", f"<= {goal}",
                         _yn(r[f"ratio_vs_{backend}"] <= goal)))
    return rows


def _sequential_rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for design, h in r["headline"].items():
        for where in ("5 below", "5 above"):
            rows.append((f"sequential: items SPRT/fixed-n at equal error rates, {where} the minimum ({design}; "
                         "exact)", f"{h[where]:.3f}", "<= 0.40", _yn(h[where] <= GOAL_SEQUENTIAL)))
        rows.append((f"sequential: the same, 20 points away ({design}; exact)", f"{h['far (+-20)']:.3f}", "-", "-"))
    bound = next(x["wald_bound_ratio_at_alternative"] for x in r["accuracy_exact"] if x["delta"] == 0.05)
    rows.append(("sequential: fewest items ANY test can average on the alternative itself (Wald's bound, "
                 "delta 0.05)", f"{bound:.3f}", "-", "-"))
    for x in r["hallucination_simulated"]:
        if x["gap"] in (-0.2, -0.1, 0.05):
            rows.append((f"sequential: hallucination betting test / fixed-n z-test, {x['gap'] * 100:+.0f} points "
                         f"from the maximum (simulated, sd {x['sd']})", f"{x['ratio']:.3f}", "-", "-"))
    return rows + _sequential_real_rows(r)


def _sequential_real_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for label, x in (r.get("real") or {}).items():
        if label == "pool":
            continue
        expected = f"; exact expectation {x['expected_ratio']:.3f}" if "expected_ratio" in x else ""
        what = (f"sequential: real Gemma run, {label} ({x['status']}, {x['items']} items vs fixed "
                f"{x.get('n_fixed') or x.get('n_fixed_estimated')}{expected})")
        judged = label.startswith("5")
        rows.append((what, f"{x['ratio']:.3f}" if x.get("ratio") is not None else "n/a",
                     "<= 0.40" if judged else "-", _yn(x["ratio"] <= GOAL_SEQUENTIAL) if judged else "-"))
    return rows


def _cache_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for label, c in r["configs"].items():
        judged = label == r.get("judged")
        rows.append((f"cache: second/first wall, `-m \"{c['marker']}\"` (same verdicts: {c['same_verdicts']})",
                     f"{c['ratio']:.3f}", "<= 0.05" if judged else "-", _yn(c["ratio"] <= 0.05) if judged else "-"))
    return rows


def _paired_rows(r: dict[str, Any]) -> list[Row]:
    return [(f"paired: items to tell a {x['drop'] * 100:.0f}-point drop, paired sequential / unpaired "
             f"({x['dataset']}, {x['rung']}, discordance {x['discordance']:.3f})",
             f"{x['ratio_sequential_vs_unpaired']:.3f}", f"<= {r['goal']}",
             _yn(x["ratio_sequential_vs_unpaired"] <= r["goal"])) for x in r["rows"]]


def _batched_rows(r: dict[str, Any]) -> list[Row]:
    goals = r["goals"]
    rows: list[Row] = []
    for s in r["selfcheck"]:
        rows.append((f"batched: SelfCheck sampling tokens/s, adapter at parallel {s['best_parallel']} / raw "
                     f"llama-cpp-python single stream (N={s['samples']}, {s['concepts']} concepts)",
                     f"{s['best_vs_raw']:.3f}", f">= {goals['selfcheck']}",
                     _yn(s["best_vs_raw"] >= goals["selfcheck"])))
    a = r["accuracy"]
    rows.append((f"batched: accuracy gate questions/s, adapter at parallel {a['best_parallel']} / raw single stream "
                 f"({a['questions']} q)", f"{a['best_vs_raw']:.3f}", f">= {goals['accuracy']}",
                 _yn(a["best_vs_raw"] >= goals["accuracy"])))
    ag = r.get("agreement")
    if ag:
        for key in (k for k in ag if k.endswith("_differ") and "rounds" not in k):
            setting = key.removesuffix("_differ").replace("_", " ")
            rows.append((f"batched: greedy answers differing from single stream, {setting} (of {ag['questions']})",
                         str(ag[key]), "0 or counted", "-"))
            rounds = ag.get(key.replace("_differ", "_rounds_of_10_differ"))
            if rounds is not None:
                rows.append((f"batched: {setting}, answers differing between one call and rounds of 10",
                             str(rounds), "0", _yn(rounds == 0)))
    return rows


_ROWS = {"overhead": _overhead_rows, "lm_eval": _lm_eval_rows, "sequential": _sequential_rows,
         "cache": _cache_rows, "paired": _paired_rows, "batched": _batched_rows}


def rows_for(r: dict[str, Any]) -> list[Row]:
    """(what, ratio, goal, met) rows of one benchmark's result."""
    name = r["benchmark"]
    if "error" in r:
        return [(name, "-", "-", f"no numbers: {r['error']}")]
    rows = _ROWS.get(name)
    return rows(r) if rows else [(name, "?", "?", "?")]


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
