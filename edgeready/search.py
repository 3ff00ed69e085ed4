"""Closing the loop to step 1: the most compact candidate that passes every gate of a target.

    python -m edgeready.search --target xiaomi-10-ultra [--candidates candidates/generated] [--limit N]
                               [--baseline gemma3-270m-q4km [--margin 0.05]]

Candidates are tried from the most compact up (file size in bytes ascending; ties by strategy,
quantization before pruning; see ladder.search_order). Each is judged by a fresh `pytest -m <role>`
run on that target, conformance first, so a candidate far from its base is rejected without the
expensive gates. The search stops at the first candidate that passes and reports, for each smaller
one, the gates it failed and their step-1 advice. With --baseline, each rung must also be non-inferior to the
base on the same questions (the paired accuracy gate, README "Against a baseline").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgeready.ladder import search_order
from edgeready.targets import resolve_target

ROOT = Path(__file__).resolve().parents[1]


def judge(manifest: Path, target: str, role: str, reports: Path, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-c", str(ROOT / "pyproject.toml"),
           "-m", role, f"--candidate={manifest}", f"--target={target}", f"--reports={reports}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    verdict = reports / "verdict.json"
    if not verdict.is_file():
        return {"status": "error", "failed": [], "errored": ["run"], "advice": proc.stdout[-500:] + proc.stderr[-500:]}
    return json.loads(verdict.read_text())["verdicts"][0]


def search(target_ref: str, candidates: list[Path], reports: Path, extra: list[str]) -> list[dict[str, Any]]:
    target = resolve_target(target_ref, ROOT / "thresholds")
    rows = []
    for manifest in search_order(candidates):
        v = judge(manifest, target_ref, target.role, reports / manifest.stem, extra)
        gates = v.get("gates", {})
        failed = [g for g, r in gates.items() if r["status"] != "pass"]
        rows.append({
            "candidate": manifest.stem,
            "size_mb": manifest.with_suffix(".gguf").stat().st_size / 2**20 if manifest.with_suffix(".gguf").exists()
            else None,
            "status": v["status"],
            "failed": failed,
            "advice": {g: gates[g].get("advice") or gates[g].get("error") for g in failed},
            "values": {g: r.get("value") for g, r in gates.items()},
        })
        print(f"{manifest.stem:<34} {v['status'].upper():<5} {', '.join(failed) or '-'}", flush=True)
        if v["status"] == "pass":
            break
    return rows


def markdown(rows: list[dict[str, Any]], target: str) -> str:
    chosen = next((r["candidate"] for r in rows if r["status"] == "pass"), None)
    lines = [f"# Search on {target}", "",
             f"Selected: **{chosen}**" if chosen else "No candidate passes every gate.", "",
             "| candidate | MiB | verdict | failed gates | values |", "|---|---|---|---|---|"]
    for r in rows:
        vals = ", ".join(f"{g} {v:.3g}" for g, v in r["values"].items() if isinstance(v, int | float))
        size = f"{r['size_mb']:.1f}" if r["size_mb"] else "-"
        lines.append(f"| {r['candidate']} | {size} | {r['status']} | {', '.join(r['failed']) or '-'} | {vals} |")
    lines += ["", "Why each smaller candidate was rejected (step-1 advice):", ""]
    for r in rows:
        for g, a in r["advice"].items():
            lines.append(f"- {r['candidate']} / {g}: {a}")
    return "\n".join(lines) + "\n"


def paired_target(target_ref: str, baseline: str, margin: float, out: Path) -> str:
    """The target with a `baseline:` block added (or replaced): every rung must also be non-inferior to
    `baseline` on the same questions, losing less than `margin` accuracy (the paired gate)."""
    import yaml

    target = resolve_target(target_ref, ROOT / "thresholds")
    assert target.source is not None
    data = yaml.safe_load(target.source.read_text(encoding="utf-8"))
    data["baseline"] = {"candidate": baseline, "margins": {"accuracy": margin}}
    data["name"] = f"{data['name']}-vs-{baseline}"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    resolve_target(str(path), ROOT / "thresholds")  # validated now: a margin this target cannot show stops here
    return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("--baseline", default=None, metavar="NAME",
                    help="also require non-inferiority to this candidate (the base) on the same questions")
    ap.add_argument("--margin", type=float, default=0.05, help="accuracy a rung may lose against --baseline")
    ap.add_argument("--candidates", type=Path, default=ROOT / "candidates" / "generated")
    ap.add_argument("--reports", type=Path, default=ROOT / "reports" / "search")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    manifests = sorted(args.candidates.glob("*.yaml"))
    if not manifests:
        print(f"no candidate manifests in {args.candidates}: run `make candidates` first", file=sys.stderr)
        return 2
    extra = [f"--limit={args.limit}"] if args.limit else []
    target = args.target
    if args.baseline:
        target = paired_target(args.target, args.baseline, args.margin, args.reports)
    rows = search(target, manifests, args.reports, extra)
    args.reports.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, target)
    (args.reports / "search.md").write_text(text)
    (args.reports / "search.json").write_text(json.dumps(rows, indent=2))
    print(text)
    return 0 if any(r["status"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
