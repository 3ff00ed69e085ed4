"""Items used by the sequential gates vs fixed-n gates with the same error rates, exactly and in real runs.

    .venv/bin/python bench/bench_sequential.py [--no-real] [--runs 4000] [--json FILE]

"Equal error rates" means both tests promise the same two things: a candidate at the minimum passes with
probability at most alpha, and one at the minimum + delta (the indifference margin) fails with probability
at most beta. The fixed-n test compared is the best there is for that promise: the one-sided exact binomial
test with the fewest items that keeps both (edgeready.sequential.sprt.fixed_n_design).

A. Accuracy, exact (dynamic programming over the binomial lattice, no simulation noise): the SPRT the gate
   runs (rounds of 10, cap 3 x the fixed n) for designs delta in {0.03, 0.04, 0.05} at minimum 0.35 (the
   device default) and 0.45, alpha = beta = 0.05, and candidates from 20 points below to 20 points above the
   minimum: expected items / fixed n, and each test's pass probability. Beside it, Wald's lower bound on the
   expected items of ANY test with the fixed test's error rates, at the alternative itself.
B. Hallucination, simulated: the betting test on passage scores from Beta distributions (sd 0.15, about
   what Gemma's passages show) vs the fixed-n one-sided z-test with the same alpha, beta and margin and the
   spread known in advance (the most favourable fixed-n case).
C. Real runs on the packaged Gemma (the default device profile, the generation store under .cache/):
   WebQSP's 3,098 training questions (../shared/data) answered once, fixed-n, give the pool's accuracy p;
   then sequential SPRT gates (margin 0.05) at minimum p - 0.15 (far), p - 0.05 (the candidate 5 points
   above) and p + 0.05 (5 points below), each drawing the same question order, so their answers come from
   the store; and one sequential hallucination gate 20 points from its maximum. (The embedded set's 854
   questions are too few a budget for this design's power: the target would be refused.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_common import ROOT, Stopwatch, emit, machine, verdict_gate

from edgeready.sequential.sprt import fixed_n_design, operating_characteristics, sprt_rule

ALPHA = BETA = 0.05
ROUND = 10
GOAL = 0.40
DESIGNS = ((0.35, 0.05), (0.35, 0.04), (0.35, 0.03), (0.45, 0.05))
GAPS = (-0.20, -0.10, -0.05, 0.0, "d/2", "d", 0.05, 0.10, 0.20)
POOL = 3098  # WebQSP's train split: the real runs need a budget well above the fixed-n design's 1,000-odd items
DATA = ROOT.parent / "shared" / "data"


def kl(a: float, b: float) -> float:
    return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))


def wald_bound(p0: float, p1: float, alpha: float, beta: float) -> float:
    """Expected items at p1 that no test with these error rates can beat: d(1 - beta || alpha) / KL(p1 || p0)."""
    return kl(1 - beta, alpha) / kl(p1, p0)


def exact_accuracy() -> list[dict[str, Any]]:
    rows = []
    for thr, delta in DESIGNS:
        fixed = fixed_n_design(thr, delta, ALPHA, BETA)
        rule = sprt_rule(thr, delta, ALPHA, BETA)
        bound = wald_bound(thr, thr + delta, fixed.alpha, 1 - fixed.power)
        from scipy.stats import binom

        for gap in GAPS:
            d = delta / 2 if gap == "d/2" else delta if gap == "d" else float(gap)
            if gap == 0.05 and math.isclose(delta, 0.05):
                continue  # the same point as "d"
            p = round(thr + d, 6)
            op = operating_characteristics(p, rule, ROUND, 3 * fixed.n)
            rows.append({
                "min": thr, "delta": delta, "gap": round(d, 4), "p": p, "n_fixed": fixed.n,
                "fixed_alpha": round(fixed.alpha, 4), "fixed_power": round(fixed.power, 4),
                "seq_mean_items": round(op.mean_items, 1), "ratio": round(op.mean_items / fixed.n, 3),
                "seq_pass": round(op.pass_prob, 4), "seq_undecided": round(op.undecided_prob, 4),
                "fixed_pass": round(float(binom.sf(fixed.k_min - 1, fixed.n, p)), 4),
                "wald_bound_ratio_at_alternative": round(bound / fixed.n, 3),
            })
    return rows


def simulated_hallucination(runs: int, seed: int, sd: float) -> list[dict[str, Any]]:
    from scipy.stats import norm

    from edgeready.sequential.betting import simulate

    rate, delta = 0.6, 0.05
    z = norm.isf(ALPHA) + norm.isf(BETA)
    n_fixed = math.ceil((z * sd / delta) ** 2)
    rows = []
    for gap in (-0.20, -0.10, -0.05, 0.0, 0.05, 0.10):
        mean = rate + gap
        k = mean * (1 - mean) / sd**2 - 1

        def draw(rng: Any, shape: tuple[int, int], a: float = mean * k, b: float = (1 - mean) * k) -> Any:
            return rng.beta(a, b, shape)

        s = simulate(draw, rate, ALPHA, beta=BETA, delta=delta, round_size=5, max_items=6 * n_fixed, runs=runs,
                     seed=seed)
        # The z-test with known sd passes when the mean of n_fixed scores is below rate - z_alpha sd / sqrt(n).
        cut = rate - norm.isf(ALPHA) * sd / math.sqrt(n_fixed)
        fixed_pass = float(norm.cdf((cut - mean) / (sd / math.sqrt(n_fixed))))
        rows.append({"max_rate": rate, "delta": delta, "sd": sd, "gap": gap, "n_fixed": n_fixed,
                     "seq_mean_items": round(s.mean_items, 1), "ratio": round(s.mean_items / n_fixed, 3),
                     "seq_pass": s.pass_rate, "seq_undecided": s.undecided_rate, "fixed_pass": round(fixed_pass, 4)})
    return rows


TARGET = """\
# Written by bench/bench_sequential.py
name: {name}
role: device
description: sequential vs fixed-n benchmark
profile: {{device: benchmark host, ram_mb: 8192, app_memory_budget_mb: 2048, threads: 2, n_ctx: 2048}}
gates:
{gate}
"""
ACCURACY = """\
  accuracy:
    dataset: {{kind: webqsp, path: webqsp/WebQSP.train.json}}
    sample_size: {n}
    seed: 0
    min_accuracy: {p_min}
    max_tokens: 16
"""
SEQUENTIAL = "    mode: sequential\n    round_size: {round}\n    delta: {delta}\n"
HALLUCINATION = """\
  hallucination:
    concepts: {{kind: countries-kb}}
    sample_size: {n}
    samples: 4
    max_tokens: 80
    max_rate: {max_rate}
    mode: sequential
    round_size: 5
"""


def _gate_run(tmp: Path, name: str, gate_yaml: str, marker: str) -> tuple[dict[str, Any], float]:
    from tests.conftest import run_gate

    target = tmp / f"{name}.yaml"
    target.write_text(TARGET.format(name=name, gate=gate_yaml))
    reports = tmp / name
    with Stopwatch() as sw:
        proc = run_gate("-m", f"device and {marker}", f"--target={target}", f"--reports={reports}",
                        f"--cache-dir={ROOT / '.cache'}", timeout=3600)
    if not (reports / "verdict.json").is_file():
        raise RuntimeError(f"{name}: no verdict (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
    return verdict_gate(reports, marker), sw.s


def real_runs(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pool, wall = _gate_run(tmp, "pool", ACCURACY.format(n=POOL, p_min=0.01), "accuracy")
    p = pool["value"]
    out["pool"] = {"n": pool["n"], "accuracy": p, "cache_hits": pool["measurement"]["details"]["cache_hits"],
                   "wall_s": round(wall, 1)}
    print(f"real pool: {pool['n']} questions, accuracy {p:.4f} ({out['pool']['cache_hits']} from the store, "
          f"{wall:.0f} s)", flush=True)
    delta = 0.05
    for label, p_min in (("far", round(max(0.02, p - 0.15), 4)), ("5 above", round(p - 0.05, 4)),
                         ("5 below", round(p + 0.05, 4))):
        gate = ACCURACY.format(n=POOL, p_min=p_min) + SEQUENTIAL.format(round=ROUND, delta=delta)
        acc, wall = _gate_run(tmp, f"seq-{label.replace(' ', '')}", gate, "accuracy")
        seq = acc["measurement"]["sequential"]
        n_fixed = seq["fixed_n_equivalent"]["n"]
        # The truth is the pool's accuracy: the candidate should pass when p >= min + delta, fail when p < min.
        right = "pass" if p >= p_min + delta - 1e-9 else "fail" if p < p_min else "either"
        # One run is one draw: beside it, what the exact computation expects of this design at the pool's p.
        expected = operating_characteristics(p, sprt_rule(p_min, delta, ALPHA, BETA), ROUND, POOL).mean_items
        out[label] = {"min": p_min, "gap": round(p - p_min, 4), "status": acc["status"], "items": seq["items_used"],
                      "n_fixed": n_fixed, "ratio": round(seq["items_used"] / n_fixed, 3),
                      "expected_items": round(expected, 1), "expected_ratio": round(expected / n_fixed, 3),
                      "right_verdict": right, "stopped_by": seq["stopped_by"], "reason": seq["reason"],
                      "accuracy": acc["value"], "wall_s": round(wall, 1)}
        print(f"real {label:8s} min {p_min:.4f} ({p - p_min:+.3f}): {acc['status']} after {seq['items_used']} items "
              f"= {out[label]['ratio']:.3f} of the fixed test's {n_fixed} ({seq['stopped_by']}; expected "
              f"{out[label]['expected_ratio']:.3f})", flush=True)
    hal, wall = _gate_run(tmp, "hal-far", HALLUCINATION.format(n=40, max_rate=0.75), "hallucination")
    seq = hal["measurement"]["sequential"]
    fixed = seq["fixed_n_equivalent"] or {}
    out["hallucination far"] = {"max_rate": 0.75, "status": hal["status"], "items": seq["items_used"],
                                "value": hal["value"], "n_fixed_estimated": fixed.get("n"), "sd": fixed.get("sd"),
                                "ratio": round(seq["items_used"] / fixed["n"], 3) if fixed.get("n") else None,
                                "reason": seq["reason"], "wall_s": round(wall, 1)}
    print(f"real hallucination, max 0.75: {hal['status']} after {seq['items_used']} concepts (rate {hal['value']:.3f}; "
          f"a z-test at these error rates needs about {fixed.get('n')})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4000, help="simulation runs of part B")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--sd", type=float, default=0.15, help="spread of simulated passage scores (part B)")
    ap.add_argument("--no-real", action="store_true", help="parts A and B only (no model runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    info = machine()

    print(f"# A. accuracy: SPRT vs the smallest fixed-n exact binomial test, alpha = beta = {ALPHA}, rounds of "
          f"{ROUND}; exact")
    a = exact_accuracy()
    print("| min | delta | n fixed | candidate - min | seq. mean items | ratio | seq. P(pass) | fixed P(pass) | "
          "Wald bound at +delta (any test) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in a:
        print(f"| {r['min']} | {r['delta']} | {r['n_fixed']} | {r['gap']:+.3f} | {r['seq_mean_items']:.0f} | "
              f"{r['ratio']:.3f} | {r['seq_pass']:.3f} | {r['fixed_pass']:.3f} | "
              f"{r['wald_bound_ratio_at_alternative']:.3f} |")
    print(f"\n# B. hallucination: betting test vs the fixed-n z-test (known sd {args.sd}), alpha = beta = {ALPHA}, "
          f"{args.runs} runs")
    b = simulated_hallucination(args.runs, args.seed, args.sd)
    print("| max rate | delta | n fixed | candidate - max | seq. mean items | ratio | seq. P(pass) | fixed P(pass) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in b:
        print(f"| {r['max_rate']} | {r['delta']} | {r['n_fixed']} | {r['gap']:+.2f} | {r['seq_mean_items']:.0f} | "
              f"{r['ratio']:.3f} | {r['seq_pass']:.3f} | {r['fixed_pass']:.3f} |")

    def at(design: tuple[float, float], gap: float) -> dict[str, Any]:
        thr, delta = design
        return next(r for r in a if r["min"] == thr and r["delta"] == delta and math.isclose(r["gap"], gap))

    headline = {f"min {thr}, delta {d}": {"5 below": at((thr, d), -0.05)["ratio"],
                                          "5 above": at((thr, d), 0.05)["ratio"],
                                          "far (+-20)": max(at((thr, d), 0.2)["ratio"], at((thr, d), -0.2)["ratio"])}
                for thr, d in DESIGNS}
    result: dict[str, Any] = {
        "benchmark": "sequential",
        "settings": {"alpha": ALPHA, "beta": BETA, "round_size": ROUND, "runs": args.runs, "seed": args.seed,
                     "fixed": "smallest one-sided exact binomial test with the same alpha and beta"},
        "accuracy_exact": a,
        "hallucination_simulated": b,
        "headline": headline,
        "goal": f"items_sequential / items_fixed <= {GOAL} for a candidate 5 points from the minimum",
        "machine": info,
    }
    print("\nitems sequential / fixed at equal error rates (goal <= 0.40 at 5 points):")
    for k, v in headline.items():
        print(f"  {k}: 5 points below {v['5 below']:.3f}, 5 points above {v['5 above']:.3f}, "
              f"20 points away <= {v['far (+-20)']:.3f}")
    if not args.no_real and not (DATA / "webqsp" / "WebQSP.train.json").is_file():
        print(f"real runs skipped: {DATA / 'webqsp' / 'WebQSP.train.json'} not found")
    elif not args.no_real:
        with tempfile.TemporaryDirectory(prefix="edgeready-bench-seq-") as tmp:
            try:
                result["real"] = real_runs(Path(tmp))
            except RuntimeError as exc:
                print(f"FAILED real run: {exc}")
                emit(result, args.json)
                return 1
        print(json.dumps(result["real"], indent=1))
    result["loadavg_end"] = machine()["loadavg_1_5_15"]
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
