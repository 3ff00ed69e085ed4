"""Reports: verdict.json for machines, summary.md for people, a table for the terminal.

A verdict groups all gates of one (candidate, target) pair. Its status is `error` if any gate
errored (a measurement that could not be made is never a pass), else `fail` if any gate failed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeready import __version__
from edgeready.measurement import GateResult

_RANK = {"pass": 0, "fail": 1, "error": 2}


def worst(statuses: list[str]) -> str:
    return max(statuses, key=_RANK.__getitem__) if statuses else "error"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("llama-cpp-python", "gguf", "pytest", "pydantic", "scipy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def group(results: list[GateResult]) -> OrderedDict[tuple[str, str], list[GateResult]]:
    pairs: OrderedDict[tuple[str, str], list[GateResult]] = OrderedDict()
    for r in results:
        pairs.setdefault((r.candidate, r.target), []).append(r)
    return pairs


def verdicts(results: list[GateResult]) -> list[dict[str, Any]]:
    out = []
    for (cand, target), rs in group(results).items():
        out.append({
            "candidate": cand,
            "target": target,
            "role": rs[0].role,
            "status": worst([r.status for r in rs]),
            "gates": {r.gate: r.to_json() for r in rs},
            "failed": [r.gate for r in rs if r.status == "fail"],
            "errored": [r.gate for r in rs if r.status == "error"],
        })
    return out


def write_reports(results: list[GateResult], reports_dir: Path, run_info: dict[str, Any],
                  overall: str | None = None, note: str | None = None) -> dict[str, Any]:
    """verdict.json and summary.md, each replaced atomically. `overall` overrides the worst gate status: a run
    that was interrupted or stopped by an error says so, never leaving a pass behind (`note` says why)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    vs = verdicts(results)
    doc = {
        "edgeready": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "processor": platform.processor(), "system": platform.platform()},
        "versions": _versions(),
        "run": run_info,
        "overall": overall or (worst([v["status"] for v in vs]) if vs else "error"),
        **({"note": note} if note else {}),
        "verdicts": vs,
    }
    _write_atomic(reports_dir / "verdict.json", json.dumps(doc, indent=2, default=str) + "\n")
    summary = summary_markdown(results, doc) + ("\n".join(_plots(doc, reports_dir)) + "\n" if results else "")
    _write_atomic(reports_dir / "summary.md", summary)
    return doc


def write_status(reports_dir: Path, overall: str, note: str, run_info: dict[str, Any] | None = None) -> None:
    """A verdict with no gate results: `running` while a run is under way (a run killed outright leaves that,
    not an earlier pass), `error` for a run stopped before any gate (a configuration error)."""
    write_reports([], reports_dir, run_info or {}, overall=overall, note=note)


def _write_atomic(path: Path, text: str) -> None:
    """Readers (CI) see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _plots(doc: dict[str, Any], reports_dir: Path) -> list[str]:
    """The trade-off plots (matplotlib) embedded in summary.md; a plotting failure is written there
    rather than failing the verdict, which does not depend on it."""
    try:
        from edgeready.plots import plots_markdown, render_plots

        paths = render_plots(json.loads(json.dumps(doc, default=str)), reports_dir / "plots")
        notes = [f"- {n}" for n in getattr(paths, "notes", [])]
        return plots_markdown(list(paths), reports_dir) + (["Plots not drawn:", "", *notes, ""] if notes else [])
    except Exception as exc:  # never silent: the summary says the plots are missing and why
        return ["## Trade-off plots", "", f"Could not draw the plots: {type(exc).__name__}: {exc}", ""]


def _cell(r: GateResult) -> str:
    if r.status == "error" or r.measurement is None:
        return "ERROR"
    m = r.measurement
    if m.gate == "memory":
        return f"{r.status.upper()} peak {m.value:.0f} MB, weights {m.details['weights_mb']:.0f} MB"
    if m.gate == "speed":
        return _speed_cell(r)
    unit = f" {m.unit}" if m.unit else ""
    ci = f" [{m.interval.low:.3g}, {m.interval.high:.3g}]" if m.interval is not None else ""
    est = " (est.)" if m.method == "estimated" else ""
    seq = m.sequential
    # A sequential gate says how much of its budget it used: the point of stopping early.
    n = f"n={seq.items_used}/{seq.max_items} seq." if seq is not None else f"n={m.n}"
    paired = f", loss {m.paired.loss:+.3g} vs base" if m.paired is not None else ""
    return f"{r.status.upper()} {m.value:.3g}{unit}{ci} {n}{est}{paired}"


def _speed_cell(r: GateResult) -> str:
    assert r.measurement is not None  # _cell shows a result without one as ERROR
    d = r.measurement.details
    t, b = d["ttft"], d["tg_batched"]
    batched = f", x{b['parallel']} {b['tokens_per_s']:.1f} t/s" if b.get("measured") else ""
    pp = f"{d['pp']['tokens_per_s']:.0f} t/s" if d["pp"].get("tokens_per_s") is not None else "n/a"
    return (f"{r.status.upper()} TTFT p50 {t['p50_s']:.3f}/p95 {t['p95_s']:.3f} s, pp {pp}, "
            f"tg {d['tg']['tokens_per_s']:.1f} t/s{batched}{'' if r.checks else ' (report only)'}")


def _rate(fig: dict[str, Any]) -> str:
    """mean +- sd (label, repetitions), as llama-bench prints a rate."""
    if fig.get("tokens_per_s") is None:
        return f"not measured: {fig.get('reason', '')}"
    sd = f" ± {fig['sd']:.3g}" if fig.get("sd") is not None else ""
    return f"{fig['tokens_per_s']:.4g}{sd} ({fig.get('label', '')}, r={fig['n']})"


def speed_markdown(results: list[GateResult]) -> list[str]:
    """The speed gate's figures per pair: TTFT, pp and tg tokens/s single and batched, and what was gated."""
    rows = []
    for r in results:
        m = r.measurement
        if r.gate != "speed" or m is None:
            continue
        t, b = m.details["ttft"], m.details["tg_batched"]
        bound = (f"{t['p95_upper_bound_s']:.3f}" if t["p95_upper_bound_s"] is not None
                 else f"n/a (needs {t['p95_upper_bound_needs']})")
        batched = (f"{_rate(b)}, B={b['parallel']}, x{b['speedup_vs_single']:.2f}" if b.get("measured")
                   else f"not measured: {b['reason']}")
        gated = ", ".join(f"{c.name} {'ok' if c.passed else 'FAIL'}" for c in r.checks) or "report only"
        rows.append(f"| {r.pair} | {t['p50_s']:.3f} | {t['p95_s']:.3f} | {bound} | {t['n']} | "
                    f"{_rate(m.details['pp'])} | {_rate(m.details['tg'])} | {batched} | {gated} |")
    if not rows:
        return []
    return [
        "## Speed (llama-bench style)",
        "",
        "Timed on the host that ran the suite (on the phone itself for a target with `profile.phone`: its "
        "meter says which) with each target's threads, context and batch size; greedy; rates are mean ± sd over "
        "the repetitions; TTFT keeps the shared few-shot preamble cached.",
        "",
        "| pair | TTFT p50 s | TTFT p95 s | p95 upper bound s | n | pp tokens/s | tg tokens/s (single) "
        "| tg tokens/s (batched) | gated |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def table_rows(results: list[GateResult]) -> tuple[list[str], list[list[str]]]:
    gates = list(OrderedDict.fromkeys(r.gate for r in results))
    rows = []
    for (cand, target), rs in group(results).items():
        by_gate = {r.gate: r for r in rs}
        rows.append([f"{cand}@{target}", worst([r.status for r in rs]).upper()]
                    + [_cell(by_gate[g]) if g in by_gate else "-" for g in gates])
    return ["pair", "verdict", *gates], rows


def terminal_table(results: list[GateResult]) -> list[str]:
    header, rows = table_rows(results)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]


def comparison_markdown(results: list[GateResult]) -> list[str]:
    """Device-only vs server-only vs offload on the same questions, per offload target."""
    rows = []
    for (cand, target), rs in group(results).items():
        if rs[0].role != "offload":
            continue
        g = {r.gate: r.measurement for r in rs if r.measurement is not None}

        def val(gate: str, fmt: str, key: str | None = None, _g: dict = g) -> str:
            m = _g.get(gate)
            if m is None:
                return "-"
            v = m.value if key is None else m.details.get(key)
            return "-" if v is None else format(v, fmt)

        acc = g.get("accuracy")
        by = acc.details.get("by_complexity", {}) if acc else {}
        simple = f"{by['simple']['accuracy']:.3f}" if "simple" in by else "-"
        complex_ = f"{by['complex']['accuracy']:.3f}" if "complex" in by else "-"
        rows.append(f"| {cand} | {target} | {val('accuracy', '.3f')} | {simple} | {complex_} | "
                    f"{val('hallucination', '.3f')} | {val('memory', '.0f')} | {val('energy', '.3f')} | "
                    f"{val('latency', '.0%', 'share_offloaded')} | {val('latency', '.2f', 'p50_s')} | "
                    f"{val('latency', '.2f', 'p95_s')} | {val('latency', 'd', 'fallbacks')} |")
    if not rows:
        return []
    return [
        "## Device-only vs server-only vs offload (same questions)",
        "",
        "| candidate | target | accuracy | simple | complex | hallucination | device peak MB | device mWh/query "
        "| offloaded | p50 s | p95 s | fallbacks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def summary_markdown(results: list[GateResult], doc: dict[str, Any]) -> str:
    header, rows = table_rows(results)
    lines = [
        "# edgeready verdict",
        "",
        f"Overall: **{doc['overall'].upper()}** ({doc['created']}, edgeready {doc['edgeready']}, "
        f"llama-cpp-python {doc['versions'].get('llama-cpp-python', '?')})",
        "",
        *([f"> {doc['note']}", ""] if doc.get("note") else []),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    lines += comparison_markdown(results)
    lines += speed_markdown(results)
    lines += regressions_markdown(results)
    for r in results:
        if r.status != "pass":
            lines += [f"## {r.gate} {r.status} for {r.pair}", "", "```", r.message(), "```", ""]
            if r.items_file:
                lines += [f"Evidence: `{r.items_file}`", ""]
    return "\n".join(lines)


def regressions_markdown(results: list[GateResult]) -> list[str]:
    """Per paired gate: the loss against the baseline and the items that flipped, side by side."""
    lines: list[str] = []
    for r in results:
        pc = r.measurement.paired if r.measurement is not None else None
        if pc is None:
            continue
        if not lines:
            lines += ["## Against the baseline: regressions and ratios", ""]
        lines.append(f"### {r.gate} of {r.pair} vs {pc.baseline}: {pc.decision.upper()}")
        if pc.stopped_by == "measured":  # a resource: a measured ratio, not a test over items
            lines += ["", f"Ratio to the baseline {1 + pc.loss:.3f} (up to {1 + pc.loss_upper:.3f}), at most "
                          f"{1 + pc.margin:.3f} allowed: {pc.reason}.", ""]
        else:
            lines += ["", f"Loss {pc.loss:+.4f} (always-valid interval [{pc.loss_lower:+.4f}, {pc.loss_upper:+.4f}])"
                          f" on {pc.n} paired items, margin {pc.margin:g}; {pc.regressions} regressions, "
                          f"{pc.improvements} improvements. {pc.reason}.", ""]
        t = pc.table or {}
        if t.get("both_right") is not None:
            lines += [f"Both right {t['both_right']}, candidate only {t['candidate_only']}, baseline only "
                      f"{t['baseline_only']}, neither {t['neither']}; McNemar exact p = "
                      f"{t['mcnemar_exact_p']:.3g}.", ""]
        flips = pc.flips
        if flips:
            lines += ["| item | flip | question | gold | baseline answered | candidate answered |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {f.get('id')} | {f.get('flip')} | {_md(f.get('question'))} | {_md(f.get('gold'))} | "
                      f"{_md(f.get('baseline_response'))} | {_md(f.get('response'))} |" for f in flips]
            lines.append("")
    return lines


def _md(value: Any) -> str:
    """A cell of a markdown table: one line, no pipes, bounded."""
    text = ", ".join(map(str, value[:3])) if isinstance(value, list) else str(value or "")
    return text.replace("|", "/").replace("\n", " ").strip()[:80]
