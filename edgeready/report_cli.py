"""Prepare the sign-off report from a finished gate run: `python -m edgeready.report_cli [--reports DIR]`.

Reads DIR/verdict.json; renders the trade-off plots into DIR/plots/; appends the run to
DIR/history.jsonl and draws the per-candidate trends; writes environment.properties and
categories.json into DIR/allure-results and attaches the plots there. Allure itself (`make report`)
runs afterwards and reads only that directory, so this step needs neither Node nor a network.

Exit status: 0 done; 2 no verdict.json (run `make gate` first).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgeready.allure_extras import (
    attach_plots,
    copy_history,
    environment_info,
    write_categories,
    write_environment,
)
from edgeready.plots import render_plots, render_trends
from edgeready.trends import append_history

ROOT = Path(__file__).resolve().parents[1]
RUN_STATE = "report_run.json"  # read by allurerc.mjs


@dataclass
class Prepared:
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # plots skipped, and why
    history_rows: int = 0
    restored: list[Path] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)  # files put into the Allure results


def prepare(reports: Path, results: Path | None = None, previous_report: Path | None = None,
            llama_cmake_args: str | None = None) -> Prepared:
    """Everything report_cli does, as a function; returns what it wrote and the notes on skipped plots."""
    results = results or reports / "allure-results"
    verdict_path = reports / "verdict.json"
    verdict = json.loads(verdict_path.read_text(encoding="utf-8"))  # Python reads the Infinity json.dumps wrote
    # A CI job starts with an empty reports/: a previous report, restored beside it, brings the history.
    restored = copy_history(previous_report, results, reports) if previous_report else []
    plot_dir = reports / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for old in plot_dir.glob("*.png"):  # a target or candidate gone from this run leaves no stale plot
        old.unlink()
    plots = render_plots(verdict, plot_dir)
    appended = append_history(verdict, reports / "history.jsonl")
    trends = render_trends(reports / "history.jsonl", plot_dir)
    # Allure appends a history point every time it renders, even the same results twice; allurerc.mjs
    # reads this to append only for a run not recorded yet.
    (reports / RUN_STATE).write_text(json.dumps({"created": verdict.get("created"), "new_run": appended > 0}) + "\n",
                                     encoding="utf-8")
    env = write_environment(results, environment_info(verdict, llama_cmake_args))
    cats = write_categories(results)
    globals_file = attach_plots(results, [*plots, *trends])
    return Prepared(plots=[*plots, *trends], notes=[*plots.notes, *trends.notes], history_rows=appended,
                    restored=restored, written=[env, cats, *([globals_file] if globals_file else [])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeready.report_cli", description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=Path, default=ROOT / "reports",
                    help="the gate run's --reports (default reports/)")
    ap.add_argument("--results", type=Path, default=None, help="Allure results (default REPORTS/allure-results)")
    ap.add_argument("--previous-report", type=Path, default=None,
                    help="a previous Allure report whose history/ to carry over (CI: the last published report)")
    ap.add_argument("--llama-cmake-args", default=None, help="CMAKE_ARGS llama-cpp-python was built with")
    args = ap.parse_args(argv)
    if not (args.reports / "verdict.json").is_file():
        print(f"report_cli: no {args.reports / 'verdict.json'}: run the gates first (make gate)", file=sys.stderr)
        return 2
    out = prepare(args.reports, args.results, args.previous_report, args.llama_cmake_args)
    for p in out.plots:
        print(f"plot: {p}")
    for n in out.notes:
        print(f"note: {n}")
    for p in out.restored:
        print(f"history restored: {p}")
    print(f"history: {out.history_rows} rows appended to {args.reports / 'history.jsonl'}")
    for p in out.written:
        print(f"allure: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
