"""Trade-off plots of a verdict for the sign-off report: where each candidate sits against a target.

One figure per question a release engineer asks of a target: is the accuracy worth the megabytes, do
the megabytes buy fewer hallucinations, what does a point of accuracy cost in energy, and (offload
targets) what does routing to a server buy over device-only and server-only. Every point carries the
interval the gate compared, so a point above a threshold line whose bar crosses it reads as what it is:
not yet a pass.

Matplotlib's object API on an explicit Agg canvas: no pyplot state, no display needed on CI runners,
and figures are freed as soon as they are saved.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeready.trends import read_history

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn: a run with nothing to plot skips it
    from matplotlib.figure import Figure

STATUS_COLORS = {"pass": "#2e7d32", "fail": "#c62828", "error": "#757575"}
# Bars of the offload comparison, in the order the seed's Fig. 5(c) puts them.
VARIANT_COLORS = {"device-only": "#1565c0", "server-only": "#6a1b9a", "offload": "#ef6c00"}
KIND_TITLES = {
    "accuracy_vs_size": "Accuracy vs weights size",
    "hallucination_vs_size": "Hallucination rate vs weights size",
    "energy_vs_accuracy": "Energy per query vs accuracy",
    "offload_comparison": "Device-only vs server-only vs offload",
    "trend": "Trend across runs",
}
DPI = 100  # 7 x 4.6 in at 100 dpi: readable in Allure's attachment pane, ~50 KB per PNG


class PlotSet(list[Path]):
    """The PNGs written, plus a note for every plot that was skipped and why."""

    def __init__(self, paths: list[Path] | None = None, notes: list[str] | None = None) -> None:
        super().__init__(paths or [])
        self.notes: list[str] = list(notes or [])


@dataclass(frozen=True)
class Point:
    """One gate's value with the interval it was judged on (bounds None where there is none)."""

    value: float
    low: float | None
    high: float | None
    status: str
    estimated: bool = False

    @property
    def unbounded(self) -> bool:
        return self.high is None

    def err(self) -> list[list[float]]:
        """Matplotlib's asymmetric error bar; an infinite upper bound is drawn to the point and flagged."""
        low = self.value if self.low is None else min(self.low, self.value)
        high = self.value if self.high is None else max(self.high, self.value)
        return [[self.value - low], [high - self.value]]


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def gate_point(gate: dict[str, Any] | None) -> Point | None:
    """A gate's point, or None when it errored or has no value (nothing honest to draw)."""
    if not gate or _finite(gate.get("value")) is None:
        return None
    iv = gate.get("interval") or {}
    m = gate.get("measurement") or {}
    return Point(float(gate["value"]), _finite(iv.get("low")), _finite(iv.get("high")),
                 gate.get("status", "error"), m.get("method") == "estimated")


def weights_mb(verdict_entry: dict[str, Any]) -> float | None:
    mem = verdict_entry.get("gates", {}).get("memory") or {}
    return _finite(((mem.get("measurement") or {}).get("details") or {}).get("weights_mb"))


def threshold(gate: dict[str, Any] | None, name: str | None = None) -> float | None:
    """The gate's threshold: its first check, or the check called `name` (memory has two)."""
    checks = (gate or {}).get("checks") or []
    for c in checks:
        if name is None or c.get("name") == name:
            return _finite(c.get("threshold"))
    return None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _by_target(verdict: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for v in verdict.get("verdicts", []):
        out.setdefault(v["target"], []).append(v)
    return out


def _new_figure(width: float = 7.0, height: float = 4.6) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # explicit Agg canvas: rendering never depends on the MPLBACKEND of the host
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no version stamp: same plot, same bytes
    return path


def _legend_for_status(ax: Any, statuses: set[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=STATUS_COLORS[s], label=f"gate {s}")
               for s in ("pass", "fail", "error") if s in statuses]
    extra = list(ax.get_legend_handles_labels()[0])  # the threshold lines drawn so far
    ax.legend(handles=extra + handles, fontsize=8, loc="best", framealpha=0.85)


def _scatter(ax: Any, x: float, y: Point, label: str, xerr: Point | None = None, stagger: int = 0) -> None:
    color = STATUS_COLORS.get(y.status, STATUS_COLORS["error"])
    ax.errorbar([x], [y.value], yerr=y.err(), xerr=xerr.err() if xerr else None, fmt="o", color=color,
                ecolor=color, elinewidth=1.4, capsize=4, markersize=7, zorder=3)
    flags = []
    if y.unbounded or (xerr is not None and xerr.unbounded):
        flags.append("bound ∞")
    if y.estimated:
        flags.append("est.")
    text = f"{label} ({', '.join(flags)})" if flags else label
    # Staggered so that candidates at the same height (same energy estimate) stay readable.
    ax.annotate(text, (x, y.value), textcoords="offset points", xytext=(7, 6 + 11 * (stagger % 3)), fontsize=8,
                zorder=4)


def _vs_size(target: str, entries: list[dict[str, Any]], gate: str, kind: str,
             ylabel: str, out_dir: Path, notes: list[str]) -> Path | None:
    pts = []
    for v in entries:
        p, w = gate_point(v["gates"].get(gate)), weights_mb(v)
        if p is None or w is None:
            missing = [n for n, x in ((gate, p), ("memory", w)) if x is None]
            notes.append(f"{KIND_TITLES[kind]} ({target}): {v['candidate']} left out, no {' / '.join(missing)} value")
            continue
        pts.append((v["candidate"], w, p))
    if not pts:
        notes.append(f"{KIND_TITLES[kind]} ({target}): skipped, needs the {gate} and memory gates "
                     f"(run them together, e.g. -m \"{entries[0]['role']} and ({gate} or memory)\")")
        return None
    fig = _new_figure()
    ax = fig.add_subplot()
    for i, (cand, w, p) in enumerate(pts):
        _scatter(ax, w, p, cand, stagger=i)
    gate_json = next(v["gates"].get(gate) for v in entries if v["gates"].get(gate))
    limit = threshold(gate_json)
    op = ((gate_json.get("checks") or [{}])[0]).get("op", "")
    if limit is not None:
        ax.axhline(limit, color="#424242", ls="--", lw=1.2, label=f"threshold {op} {limit:g}")
    wmax = next((threshold(v["gates"].get("memory"), "weights") for v in entries if v["gates"].get("memory")), None)
    if wmax is not None:
        ax.axvline(wmax, color="#9e9e9e", ls=":", lw=1.2, label=f"max weights {wmax:g} MB")
    ax.set_xlabel("weights (MB, GGUF tensor bytes)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{KIND_TITLES[kind]} — target {target}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    # Megabytes and rates are never negative (a server-only variant keeps 0 MB on the device): no
    # negative ticks from the margins, only room for a point sitting at zero.
    lo, hi = ax.get_xlim()
    ax.set_xlim(max(lo, -0.04 * hi), hi)
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, -0.02), min(hi, 1.02) if hi > 1 >= max(p.value for _, _, p in pts) else hi)
    _legend_for_status(ax, {p.status for _, _, p in pts})
    return _save(fig, out_dir / f"{slug(target)}__{kind}.png")


def _energy_vs_accuracy(target: str, entries: list[dict[str, Any]], out_dir: Path, notes: list[str]) -> Path | None:
    kind = "energy_vs_accuracy"
    pts = []
    for v in entries:
        e, a = gate_point(v["gates"].get("energy")), gate_point(v["gates"].get("accuracy"))
        if e is None or a is None:
            missing = [n for n, x in (("energy", e), ("accuracy", a)) if x is None]
            notes.append(f"{KIND_TITLES[kind]} ({target}): {v['candidate']} left out, no {' / '.join(missing)} value")
            continue
        pts.append((v["candidate"], a, e))
    if not pts:
        notes.append(f"{KIND_TITLES[kind]} ({target}): skipped, needs the energy and accuracy gates")
        return None
    fig = _new_figure()
    ax = fig.add_subplot()
    for i, (cand, a, e) in enumerate(pts):
        _scatter(ax, a.value, e, cand, xerr=a, stagger=i)
    emax = next((threshold(v["gates"].get("energy")) for v in entries if v["gates"].get("energy")), None)
    amin = next((threshold(v["gates"].get("accuracy")) for v in entries if v["gates"].get("accuracy")), None)
    if emax is not None:
        ax.axhline(emax, color="#424242", ls="--", lw=1.2, label=f"max {emax:g} mWh/query")
    if amin is not None:
        ax.axvline(amin, color="#9e9e9e", ls=":", lw=1.2, label=f"min accuracy {amin:g}")
    ax.set_xlabel("accuracy (share correct; bars: Wilson interval)")
    ax.set_ylabel("energy per query (mWh; bars: Student-t interval)")
    ax.set_title(f"{KIND_TITLES[kind]} — target {target}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, -0.04 * hi), hi)  # energy is never negative: room for a point at 0, no negative ticks
    _legend_for_status(ax, {e.status for _, _, e in pts})
    return _save(fig, out_dir / f"{slug(target)}__{kind}.png")


def variant_label(entry: dict[str, Any]) -> str:
    """device-only / server-only / offload, from the routing policy the run recorded (names vary:
    `offload-default.device-only` from --compare, `offload-device-only` as a manifest)."""
    for g in entry.get("gates", {}).values():
        adapter = (((g.get("measurement") or {}).get("provenance") or {}).get("adapter") or {})
        policy = adapter.get("policy")
        if policy == "never":
            return "device-only"
        if policy == "always":
            return "server-only"
        if policy:
            return "offload"
    name = entry["candidate"]
    return next((k for k in ("device-only", "server-only") if name.endswith(k)), "offload")


def _policy(entry: dict[str, Any]) -> str | None:
    for g in entry.get("gates", {}).values():
        policy = ((((g.get("measurement") or {}).get("provenance") or {}).get("adapter") or {}).get("policy"))
        if policy:
            return str(policy)
    return None


def _bar(value: float | None, low: float | None, high: float | None) -> tuple[float, list[float]]:
    if value is None:
        return math.nan, [0.0, 0.0]
    lo = value if low is None else min(low, value)
    hi = value if high is None else max(high, value)
    return value, [value - lo, hi - value]


def _complexity_bar(part: dict[str, Any]) -> tuple[float, list[float]]:
    """One `by_complexity` entry of the accuracy gate: {"accuracy": a, "interval": [low, high], ...}."""
    low, high = (part.get("interval") or [None, None])[:2]
    return _bar(_finite(part.get("accuracy")), _finite(low), _finite(high))


def _variant_bars(ax: Any, ax_lat: Any, i: int, v: dict[str, Any], n_rows: int, n_groups: int,
                  width: float) -> None:
    """One deployment's bars: accuracy overall and by complexity, share offloaded, and its p95 latency."""
    label = variant_label(v)
    policy = _policy(v)
    name = f"{v['candidate']}" + (f" ({policy})" if label == "offload" and policy else "")
    acc = v["gates"].get("accuracy") or {}
    by = ((acc.get("measurement") or {}).get("details") or {}).get("by_complexity") or {}
    lat = v["gates"].get("latency") or {}
    ld = (lat.get("measurement") or {}).get("details") or {}
    iv = acc.get("interval") or {}
    share_iv = ld.get("share_offloaded_interval") or [None, None]
    bars = [
        _bar(_finite(acc.get("value")), _finite(iv.get("low")), _finite(iv.get("high"))),
        *(_complexity_bar(by.get(k) or {}) for k in ("simple", "complex")),
        _bar(_finite(ld.get("share_offloaded")), _finite(share_iv[0]), _finite(share_iv[1])),
    ]
    xs = [g + (i - (n_rows - 1) / 2) * width for g in range(n_groups)]
    color = VARIANT_COLORS[label]
    ax.bar(xs, [b[0] for b in bars], width * 0.92, yerr=[[b[1][0] for b in bars], [b[1][1] for b in bars]],
           color=color, alpha=0.85, capsize=3, label=name, ecolor="#212121")
    p95 = _finite(ld.get("p95_s"))
    ub = ld.get("p95_upper_bound_s")
    val, err = _bar(p95, p95, _finite(ub))
    ax_lat.bar([i], [val], 0.7, yerr=[[err[0]], [err[1]]], color=color, alpha=0.85, capsize=3, ecolor="#212121")
    if p95 is not None and _finite(ub) is None and ub is not None:
        ax_lat.annotate("UB ∞", (i, p95), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)

def _offload_comparison(target: str, entries: list[dict[str, Any]], out_dir: Path, notes: list[str]) -> Path | None:
    kind = "offload_comparison"
    rows = []
    for v in entries:
        acc, lat = v["gates"].get("accuracy"), v["gates"].get("latency")
        if gate_point(acc) is None and gate_point(lat) is None:
            notes.append(f"{KIND_TITLES[kind]} ({target}): {v['candidate']} left out, no accuracy or latency value")
            continue
        rows.append(v)
    if not rows:
        notes.append(f"{KIND_TITLES[kind]} ({target}): skipped, needs the accuracy and latency gates")
        return None
    order = {"device-only": 0, "server-only": 1, "offload": 2}
    rows.sort(key=lambda v: (order[variant_label(v)], v["candidate"]))
    if {variant_label(v) for v in rows} == {"offload"}:
        notes.append(f"{KIND_TITLES[kind]} ({target}): only the offload candidate; `make compare` "
                     "(pytest -m offload --compare) adds device-only and server-only on the same questions")

    groups = ["accuracy", "simple", "complex", "share offloaded"]
    fig = _new_figure(width=9.0, height=4.6)
    ax, ax_lat = fig.subplots(1, 2, width_ratios=[3, 1.25])
    width = 0.8 / len(rows)
    for i, v in enumerate(rows):
        _variant_bars(ax, ax_lat, i, v, len(rows), len(groups), width)
    amin = next((threshold(v["gates"].get("accuracy")) for v in rows if v["gates"].get("accuracy")), None)
    lat_gate = next((v["gates"].get("latency") for v in rows if v["gates"].get("latency")), None)
    smax, p95max = threshold(lat_gate, "share_offloaded"), threshold(lat_gate, "p95_latency")
    if amin is not None:
        ax.hlines(amin, -0.45, 0.45, colors="#424242", linestyles="--", lw=1.2, label=f"min accuracy {amin:g}")
    if smax is not None:
        ax.hlines(smax, 2.55, 3.45, colors="#424242", linestyles=":", lw=1.2, label=f"max share offloaded {smax:g}")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share (bars: 95% intervals)")
    ax.grid(axis="y", alpha=0.3)
    if p95max is not None:
        ax_lat.axhline(p95max, color="#424242", ls="--", lw=1.2, label=f"max p95 {p95max:g} s")
    # One legend under both panels: inside, it would hide the bars it explains.
    handles = ax.get_legend_handles_labels()[0] + ax_lat.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    ax_lat.set_xticks(range(len(rows)), [variant_label(v) for v in rows], fontsize=8)
    ax_lat.set_ylabel("p95 end-to-end latency (s)")
    ax_lat.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{KIND_TITLES[kind]} — target {target} (same questions)", fontsize=11)
    return _save(fig, out_dir / f"{slug(target)}__{kind}.png")


def render_plots(verdict: dict[str, Any], out_dir: Path) -> PlotSet:
    """Every trade-off plot the verdict has data for, per target; `.notes` says what was skipped."""
    out = PlotSet()
    if not verdict.get("verdicts"):
        out.notes.append("no verdicts in verdict.json: nothing to plot")
        return out
    for target, entries in _by_target(verdict).items():
        made = [
            _vs_size(target, entries, "accuracy", "accuracy_vs_size",
                     "accuracy (share correct; bars: Wilson interval)", out_dir, out.notes),
            _vs_size(target, entries, "hallucination", "hallucination_vs_size",
                     "hallucination rate (bars: bootstrap interval)", out_dir, out.notes),
            _energy_vs_accuracy(target, entries, out_dir, out.notes),
        ]
        if any(v.get("role") == "offload" for v in entries):
            made.append(_offload_comparison(target, entries, out_dir, out.notes))
        out.extend(p for p in made if p is not None)
    return out


def render_trends(history_path: Path, out_dir: Path) -> PlotSet:
    """One figure per candidate: each gate's value over the runs in reports/history.jsonl, a line per
    target, markers coloured by the gate's status in that run."""
    out = PlotSet()
    rows = [r for r in read_history(history_path) if r.get("value") is not None]
    if not rows:
        out.notes.append(f"trends: skipped, no history yet in {history_path}")
        return out
    for cand in sorted({r["candidate"] for r in rows}):
        mine = [r for r in rows if r["candidate"] == cand]
        runs = sorted({str(r["run"]) for r in mine})
        if len(runs) < 2:
            out.notes.append(f"trends: {cand} skipped, one run so far (a trend needs two)")
            continue
        gates = sorted({r["gate"] for r in mine})
        fig = _new_figure(width=7.0, height=1.0 + 1.9 * len(gates))
        axes = fig.subplots(len(gates), 1, sharex=True, squeeze=False)[:, 0]
        index = {run: i for i, run in enumerate(runs)}
        for ax, gate in zip(axes, gates, strict=True):
            for target in sorted({r["target"] for r in mine if r["gate"] == gate}):
                pts = sorted((index[str(r["run"])], r) for r in mine if r["gate"] == gate and r["target"] == target)
                xs, ys = [i for i, _ in pts], [r["value"] for _, r in pts]
                ax.plot(xs, ys, "-", color="#9e9e9e", lw=1, zorder=1)
                lows = [r["value"] - r["low"] if r.get("low") is not None else 0.0 for _, r in pts]
                highs = [r["high"] - r["value"] if r.get("high") is not None else 0.0 for _, r in pts]
                ax.errorbar(xs, ys, yerr=[lows, highs], fmt="none", ecolor="#bdbdbd", capsize=2, zorder=1)
                ax.scatter(xs, ys, c=[STATUS_COLORS.get(r.get("status"), STATUS_COLORS["error"]) for _, r in pts],
                           s=28, zorder=2)
                ax.annotate(target, (xs[-1], ys[-1]), textcoords="offset points", xytext=(6, 0), fontsize=7,
                            va="center")
            unit = next((r.get("unit") for r in mine if r["gate"] == gate and r.get("unit")), "")
            ax.set_ylabel(f"{gate}" + (f"\n({unit})" if unit else ""), fontsize=9)
            ax.grid(alpha=0.3)
            ax.margins(x=0.15)
        axes[-1].set_xticks(range(len(runs)), [_short_time(r) for r in runs], rotation=30, ha="right", fontsize=8)
        fig.suptitle(f"{KIND_TITLES['trend']} — {cand} (green pass, red fail)", fontsize=11)
        out.append(_save(fig, out_dir / f"trend__{slug(cand)}.png"))
    return out


def _short_time(run: str) -> str:
    # ISO "2026-11-24T08:47:55+00:00" -> "11-24 08:47"; anything else as given
    m = re.match(r"\d{4}-(\d\d-\d\d)T(\d\d:\d\d)", run)
    return f"{m.group(1)} {m.group(2)}" if m else run


def plot_title(path: Path) -> str:
    """Alt text for a plot file written here: `<target>__<kind>.png` or `trend__<candidate>.png`."""
    first, _, second = path.stem.partition("__")
    if first == "trend":
        return f"{KIND_TITLES['trend']}: {second}"
    return f"{KIND_TITLES.get(second, second)}: target {first}"


def plots_markdown(paths: list[Path], relative_to: Path) -> list[str]:
    """Markdown lines embedding the plots in a document that lives in `relative_to` (summary.md's
    folder), with relative links so the folder can be moved or archived as a whole."""
    if not paths:
        return []
    lines = ["## Trade-off plots", ""]
    for p in paths:
        rel = Path(os.path.relpath(Path(p).resolve(), Path(relative_to).resolve())).as_posix()
        lines += [f"![{plot_title(Path(p))}]({rel})", ""]
    return lines
