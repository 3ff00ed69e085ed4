"""Is the paired gate's test the best valid one at the points where it misses the goal? Two alternatives.

    .venv/bin/python bench/bench_paired_alternatives.py [--runs 2000]

At the WebQSP design points of docs/PAIRED.md where the shipped test needs more than a quarter of the unpaired
design's items (Q3_K_M and Q2_K, d = 3 and 5 points), the mean items at the drop (loss d) and at no loss, by
simulation at the measured discordance q, alpha = beta = 0.05, looks every 10 items:

- **shipped**: the betting e-process on Y = (1 + loss) / 2 (edgeready/sequential/paired.py), with its aGRAPA
  bets; and the same with other bet settings (the prior's variance and weight, the truncation): bets may be
  anything predictable, so each variant is as valid as the shipped one;
- **mixture LR**: a parametric e-process for the pairs' three outcomes (regression, improvement, agreement):
  the Krichevsky-Trofimov (Dirichlet 1/2) mixture likelihood over the maximum likelihood under the null
  (loss >= d to pass, loss <= 0 to fail), "universal inference" (Wasserman, Ramdas & Balakrishnan 2020): valid
  at any look because the mixture over any one null point is a martingale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.special import gammaln

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgeready.sequential.betting as betting

POINTS = [("WebQSP Q3_K_M", 0.055, 0.03), ("WebQSP Q3_K_M", 0.055, 0.05), ("WebQSP Q2_K", 0.065, 0.03),
          ("WebQSP Q2_K", 0.065, 0.05)]
VARIANTS = {"shipped (prior var 1/4, weight 1, c 3/4)": (0.25, 1.0, 0.75), "prior var 1/100": (0.01, 1.0, 0.75),
            "prior weight 1/10": (0.25, 0.1, 0.75), "truncation 0.9": (0.25, 1.0, 0.9)}
ALPHA = BETA = 0.05
ROUND = 10


def pairs(q: float, loss: float, runs: int, items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Regression and improvement indicators: P(regression) - P(improvement) = loss, their sum q."""
    u = np.random.default_rng(seed).random((runs, items))
    r, i = (q + loss) / 2, (q - loss) / 2
    return u < r, (u >= r) & (u < r + i)


def first_decision(codes: np.ndarray, ends: np.ndarray) -> dict[str, float]:
    stopped = codes != 0
    first = np.where(stopped.any(axis=1), stopped.argmax(axis=1), len(ends) - 1)
    verdict = codes[np.arange(len(codes)), first]
    return {"items": float(ends[first].mean()), "pass": float(np.mean(verdict == 1)),
            "fail": float(np.mean(verdict == -1))}


def betting_items(reg: np.ndarray, imp: np.ndarray, d: float, variant: tuple[float, float, float]) -> dict:
    saved = betting.PRIOR_VAR, betting.PRIOR_WEIGHT, betting.TRUNCATION
    betting.PRIOR_VAR, betting.PRIOR_WEIGHT, betting.TRUNCATION = variant
    try:
        y = np.where(reg, 1.0, np.where(imp, 0.0, 0.5))
        ends = np.arange(ROUND, y.shape[1] + 1, ROUND)
        return first_decision(betting.betting_decide(y, (1 + d) / 2, d / 2, ALPHA, BETA, ends), ends)
    finally:
        betting.PRIOR_VAR, betting.PRIOR_WEIGHT, betting.TRUNCATION = saved


def _loglik(a: np.ndarray, b: np.ndarray, c: np.ndarray, r: np.ndarray, i: np.ndarray) -> np.ndarray:
    def term(k: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.where(k > 0, k * np.log(np.maximum(p, 1e-300)), 0.0)

    return term(a, r) + term(b, i) + term(c, 1 - r - i)


def mixture_items(reg: np.ndarray, imp: np.ndarray, d: float) -> dict:
    ends = np.arange(ROUND, reg.shape[1] + 1, ROUND)
    a = np.cumsum(reg, axis=1)[:, ends - 1].astype(float)
    b = np.cumsum(imp, axis=1)[:, ends - 1].astype(float)
    n = np.broadcast_to(ends, a.shape).astype(float)
    c = n - a - b
    mix = gammaln(1.5) - gammaln(n + 1.5) + sum(gammaln(k + 0.5) - gammaln(0.5) for k in (a, b, c))
    free = _loglik(a, b, c, a / n, b / n)
    # Loss >= d on its boundary r = i + d: the root in [0, (1 - d) / 2) of 2n i^2 - B i - C = 0.
    big_b, big_c = (a + b) * (1 - d) - 2 * d * (b + c), b * d * (1 - d)
    i = np.clip((big_b + np.sqrt(big_b**2 + 8 * n * big_c)) / (4 * n), 0, (1 - d) / 2 - 1e-12)
    null_pass = np.where(a - b >= d * n, free, _loglik(a, b, c, i + d, i))
    half = (a + b) / (2 * n)  # loss <= 0 on its boundary r = i
    null_fail = np.where(a <= b, free, _loglik(a, b, c, half, half))
    codes = np.where(mix - null_pass >= np.log(1 / ALPHA), 1, np.where(mix - null_fail >= np.log(1 / BETA), -1, 0))
    return first_decision(codes, ends)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for name, q, d in POINTS:
        row: dict = {"point": name, "q": q, "d": d}
        for at, loss in (("drop", d), ("none", 0.0)):
            reg, imp = pairs(q, loss, args.runs, args.items, seed=7)
            for label, variant in VARIANTS.items():
                row[f"{label} / {at}"] = betting_items(reg, imp, d, variant)
            row[f"mixture LR / {at}"] = mixture_items(reg, imp, d)
        rows.append(row)
        cells = "  ".join(f"{k.split(' / ')[0][:22]}:{v['items']:.0f}" for k, v in row.items()
                          if isinstance(v, dict) and k.endswith("drop"))
        print(f"{name} q={q} d={d}  drop items  {cells}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "paired-alternatives", "runs": args.runs, "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
