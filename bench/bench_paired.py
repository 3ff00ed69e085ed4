"""Items needed to detect an accuracy drop: paired (fixed and sequential) vs two independent intervals.

    .venv/bin/python bench/bench_paired.py [--n 300] [--json FILE] [--no-real]

1. Real discordance: the ladder's Q8_0, Q5_K_M, Q3_K_M and Q2_K rungs, quantized from the packaged Gemma 3
   270M Q4_K_M (the base), answer the same n questions as the base through the suite's paired accuracy gate
   (`pytest -m "device and accuracy" --candidate <rung> --baseline gemma3-270m-q4km`), on the embedded set and,
   when ../shared/data is there, on WebQSP train. Each run's verdict gives the discordant counts.
2. For each measured (base accuracy, discordance q), the items a design needs to tell a candidate that lost
   d = 3 or 5 points from one that lost nothing, at alpha = beta = 0.05:
   - unpaired: two independent samples, a one-sided z-test of the difference (n per model);
   - paired fixed: McNemar's z-test on the same n items (normal approximation);
   - paired sequential: the gate's own test (an always-valid betting test with margin d, beta controlled at
     no loss: `power_at: 0`, the default), its mean items at loss d and at loss 0, by simulation with the
     measured q (exact error rates: Ville); and, for comparison, the same test powered at half the margin
     (`power_at: 0.5`, the default before 2026-12-02);
   - the floor: Wald's SPRT of "loss 0" against "loss d" at the measured q, the sequential test with the
     smallest expected number of items at both points among all tests with these error rates
     (Wald-Wolfowitz), simulated. It knows q, which no real gate does. No sequential test can go below it, so
     where the floor is above a quarter of the unpaired design the goal is out of reach for that rung,
     whatever the method.
   The goal: the paired sequential gate needs at most a quarter of the unpaired design's items.

`--measured FILE` re-simulates from the measured discordance of an earlier run's --json (no model runs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from statistics import NormalDist
from typing import Any

from bench_common import ROOT, emit

from tests.conftest import SHARED_DATA, run_gate

RUNGS = ("Q8_0", "Q5_K_M", "Q3_K_M", "Q2_K")
DROPS = (0.03, 0.05)
ALPHA = BETA = 0.05
GOAL = 0.25
Z = NormalDist().inv_cdf(1 - ALPHA) + NormalDist().inv_cdf(1 - BETA)


def measure_discordance(n: int, dataset: str) -> dict[str, dict[str, Any]]:
    """Each rung against the base on the same n questions, through the real gate."""
    from edgeready.candidates import resolve_candidate
    from edgeready.ladder import build_ladder

    out = Path(tempfile.mkdtemp(prefix="bench-paired-"))
    base = resolve_candidate("gemma3-270m-q4km", ROOT / "candidates")
    manifests = build_ladder(base, ROOT / ".cache" / "bench-ladder", ROOT / ".cache", quants=RUNGS, prune=())
    source = "{kind: countries-kb}" if dataset == "embedded" else "{kind: webqsp, path: webqsp/WebQSP.train.json}"
    target = out / "paired.yaml"
    target.write_text(
        "name: bench-paired\nrole: device\nprofile: {device: bench, ram_mb: 24576, app_memory_budget_mb: 2048, "
        "threads: 2, n_ctx: 1024}\nbaseline: {candidate: gemma3-270m-q4km, margins: {accuracy: 0.05}}\n"
        f"gates:\n  accuracy: {{dataset: {source}, sample_size: {n}, min_accuracy: 0.01}}\n")
    found = {}
    for manifest in manifests:
        reports = out / manifest.stem
        run_gate("-m", "device and accuracy", f"--candidate={manifest}", f"--target={target}",
                 f"--data-dir={SHARED_DATA}", f"--reports={reports}", timeout=3600)
        acc = json.loads((reports / "verdict.json").read_text())["verdicts"][0]["gates"]["accuracy"]
        pc = acc["measurement"]["paired"]
        t = pc["table"]
        base_acc = (t["both_right"] + t["baseline_only"]) / pc["n"]
        found[manifest.stem] = {"n": pc["n"], "base_accuracy": base_acc, "candidate_accuracy": acc["value"],
                                "discordance": (t["baseline_only"] + t["candidate_only"]) / pc["n"],
                                "regressions": t["baseline_only"], "improvements": t["candidate_only"],
                                "decision": pc["decision"]}
        print(f"{dataset:8s} {manifest.stem:24s} n={pc['n']} base {base_acc:.3f} rung {acc['value']:.3f} "
              f"discordant {found[manifest.stem]['discordance']:.3f}", flush=True)
    return found


def unpaired_n(p: float, d: float) -> int:
    """Per model: one-sided z-test of p - (p - d) from two independent samples."""
    p2 = p - d
    return math.ceil((Z * math.sqrt(p * (1 - p) + p2 * (1 - p2)) / d) ** 2)


def paired_fixed_n(q: float, d: float) -> int:
    """McNemar's z-test on discordant pairs: var of a pair's difference is q - d^2 under the drop."""
    return math.ceil((Z * math.sqrt(q) / d) ** 2)


def sprt_floor(q: float, d: float, runs: int, seed: int) -> float:
    """Mean items of Wald's SPRT of loss 0 against loss d on the pairs' trinomial (regression, improvement,
    agreement), discordance q at no loss and max(q, d) at the drop, simulated at both points; the larger."""
    import numpy as np

    q1 = max(q, d)
    p0 = np.array([q / 2, q / 2, 1 - q])  # no loss: regressions and improvements alike
    p1 = np.array([(q1 + d) / 2, (q1 - d) / 2, 1 - q1])  # loss d
    with np.errstate(divide="ignore"):
        step = np.log(p1) - np.log(p0)  # log likelihood ratio of one pair, per kind (-inf: rules the drop out)
    upper, lower = math.log((1 - BETA) / ALPHA), math.log(BETA / (1 - ALPHA))
    rng = np.random.default_rng(seed)
    worst = 0.0
    for truth in (p1, p0):
        kinds = rng.choice(3, size=(runs, 20_000), p=truth)
        llr = np.cumsum(step[kinds], axis=1)
        crossed = (llr >= upper) | (llr <= lower)
        first = np.where(crossed.any(axis=1), crossed.argmax(axis=1) + 1, crossed.shape[1])
        worst = max(worst, float(first.mean()))
    return worst


def paired_sequential_items(q: float, d: float, runs: int, seed: int, power_at: float) -> dict[str, float]:
    """The gate's paired test with margin d, beta at loss power_at * d: mean items to fail a drop of d and to
    pass no drop (simulated)."""
    import numpy as np

    from edgeready.sequential.betting import simulate
    from edgeready.sequential.paired import paired_test

    test = paired_test(d, ALPHA, BETA, power_at)
    out = {}
    for label, loss in (("at the drop", d), ("no drop", 0.0)):
        q_eff = max(q, loss)  # a drop of d needs at least d discordance
        regress, improve = (q_eff + loss) / 2, (q_eff - loss) / 2

        def draw(rng: np.random.Generator, shape: tuple[int, int], r=regress, i=improve) -> np.ndarray:
            u = rng.random(shape)
            return np.where(u < r, 1.0, np.where(u < r + i, 0.0, 0.5))
        res = simulate(draw, test.threshold, ALPHA, beta=BETA, delta=test.delta, round_size=10, max_items=10_000,
                       runs=runs, seed=seed)
        out[label] = res.mean_items
        out[f"{label} error"] = res.pass_rate if loss > 0 else res.fail_rate
    return out


def compare(measured: dict[str, dict[str, dict[str, Any]]], runs: int) -> list[dict[str, Any]]:
    rows = []
    for dataset, rungs in measured.items():
        for rung, m in rungs.items():
            for d in DROPS:
                q = m["discordance"]
                seq = paired_sequential_items(q, d, runs, seed=len(rows), power_at=0.0)
                half = paired_sequential_items(q, d, runs, seed=len(rows), power_at=0.5)
                un = unpaired_n(m["base_accuracy"], d)
                worst = max(seq["at the drop"], seq["no drop"])
                floor = sprt_floor(q, d, min(runs, 1000), seed=len(rows))
                rows.append({"dataset": dataset, "rung": rung, "drop": d, "discordance": round(q, 4),
                             "unpaired_n": un, "paired_fixed_n": paired_fixed_n(max(q, d), d),
                             "paired_sequential_mean_items": {k: round(v, 1) for k, v in seq.items()},
                             "powered_at_half_mean_items": {k: round(v, 1) for k, v in half.items()},
                             "sprt_floor_items": round(floor, 1),
                             "ratio_sequential_vs_unpaired": round(worst / un, 3),
                             "ratio_floor_vs_unpaired": round(floor / un, 3),
                             "ratio_powered_at_half_vs_unpaired": round(max(half["at the drop"], half["no drop"]) / un,
                                                                        3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="questions per dataset")
    ap.add_argument("--runs", type=int, default=2000, help="simulated runs per design point")
    ap.add_argument("--json", default=None)
    ap.add_argument("--measured", type=Path, default=None, help="an earlier --json: re-simulate its discordance")
    args = ap.parse_args(argv)
    datasets = ["embedded"] + (["webqsp"] if (SHARED_DATA / "webqsp").is_dir() else [])
    if args.measured:
        earlier = json.loads(args.measured.read_text())
        measured, args.n = earlier["measured"], earlier["n_questions"]
    else:
        measured = {ds: measure_discordance(args.n, ds) for ds in datasets}
    rows = compare(measured, args.runs)
    for r in rows:
        s = r["paired_sequential_mean_items"]
        print(f"{r['dataset']:8s} {r['rung']:24s} drop {r['drop']:.2f} q={r['discordance']:.3f}: unpaired "
              f"{r['unpaired_n']} per model, paired fixed {r['paired_fixed_n']}, paired sequential "
              f"{s['at the drop']:.0f} (drop) / {s['no drop']:.0f} (none): ratio {r['ratio_sequential_vs_unpaired']}"
              f" (SPRT floor {r['ratio_floor_vs_unpaired']}, powered at half {r['ratio_powered_at_half_vs_unpaired']})")
    ratios = [r["ratio_sequential_vs_unpaired"] for r in rows]
    reachable = [r for r in rows if r["ratio_floor_vs_unpaired"] <= GOAL]
    result = {"benchmark": "paired", "n_questions": args.n, "measured": measured, "rows": rows,
              "worst_ratio": max(ratios), "median_ratio": sorted(ratios)[len(ratios) // 2],
              "goal": GOAL, "goal_met_everywhere": max(ratios) <= GOAL,
              "goal_reachable_rows": len(reachable),
              "goal_met_where_reachable": all(r["ratio_sequential_vs_unpaired"] <= GOAL for r in reachable)}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
