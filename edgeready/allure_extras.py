"""What allure-pytest does not write: the environment, the failure categories, history and the plots.

All of it goes into the results directory (or beside it), so both Allure 3 (the `allure` npm package
that `make report` pins) and Allure 2's CLI read the same files:

- environment.properties: the run's software and hardware, shown on the report's overview;
- categories.json: "Gate failed" vs "Measurement error" vs "Inconclusive". Allure 2 and Allure 3's
  classic plugin read it from the results; Allure 3's default (awesome) plugin takes categories from
  its config, so allurerc.mjs loads this same file;
- history: Allure 2 keeps it in `<report>/history/*.json` and wants it copied into the next results.
  Allure 3 keeps one JSON line per run in the config's `historyPath` (reports/allure-history.jsonl);
  `make report` copies that file into `<report>/history/` too, so a CI job that restores the previous
  report restores both kinds with copy_history;
- the plots: Allure 3 "global attachments" (a `*-globals.json` listing `*-attachment.png` files),
  shown under the report's Global Attachments tab without adding a fake test to the statistics.
"""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeready.trends import merge_jsonl

# Exceptions that mean "the measurement could not be made" (the gate is an error, never a pass).
MEASUREMENT_ERRORS = (
    "MeasurementError", "ConfigError", "ScorerUnavailable", "EnergyUnavailable", "DatasetError",
    "ServerStartError", "ServerRequestError", "CacheError",
)
# Allure 2 matches messageRegex/traceRegex against the whole text (Java's matches()), Allure 3 searches
# (JavaScript's test()), and JavaScript has no inline (?s): [\s\S]* on both sides works in both.
CATEGORIES: list[dict[str, Any]] = [
    # First match wins (in both Allure versions): the specific "inconclusive" before the generic fail.
    {
        "name": "Inconclusive (bound vs point)",
        "description": "The point estimate meets the threshold but its confidence bound does not: "
                       "more items (the advice says how many) would settle it.",
        "matchedStatuses": ["failed"],
        "messageRegex": r"[\s\S]*inconclusive[\s\S]*",
    },
    {
        "name": "Gate failed",
        "description": "A measurement was made and its bound missed the target's threshold: back to step 1.",
        "matchedStatuses": ["failed"],
    },
    {
        "name": "Measurement error",
        "description": "The measurement could not be made (model, data, scorer, meter or server missing or "
                       "broken). Never a pass; fix the setup and run again.",
        "matchedStatuses": ["broken"],
        "traceRegex": r"[\s\S]*(" + "|".join(MEASUREMENT_ERRORS) + r")[\s\S]*",
    },
]
GLOBALS_FILE = "edgeready-plots-globals.json"
PLOT_PREFIX = "edgeready-plot-"
ALLURE3_HISTORY = "allure-history.jsonl"
METRIC_HISTORY = "history.jsonl"


def _escape(text: str, key: bool = False) -> str:
    """Java .properties escaping: Allure 2 reads the file as ISO-8859-1, so anything else is \\uXXXX."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif key and ch in " =:#!":
            out.append("\\" + ch)
        elif ord(ch) > 0x7E or ord(ch) < 0x20:
            out.extend(f"\\u{u:04x}" for u in _utf16(ch))
        else:
            out.append(ch)
    return "".join(out)


def _utf16(ch: str) -> list[int]:
    b = ch.encode("utf-16-be")
    return [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]


def write_environment(results_dir: Path, info: Mapping[str, object]) -> Path:
    """environment.properties from `info` (keys sorted, so two runs diff cleanly)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{_escape(str(k), key=True)}={_escape(str(v))}" for k, v in sorted(info.items()) if v is not None]
    path = results_dir / "environment.properties"
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """'Intel(R) Xeon(R) ... x 2 logical CPUs' from /proc/cpuinfo; the platform's words elsewhere."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    lines = text.splitlines()
    # x86 says "model name"; ARM boards (the phones' SoCs) say "Hardware" or nothing at all.
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith(("model name", "hardware"))]
    count = sum(1 for ln in lines if ln.startswith("processor"))
    name = names[0] if names else (platform.processor() or platform.machine())
    return f"{name} x {count} logical CPUs" if count else name


def _walk(obj: Any) -> Iterable[tuple[str, Any]]:
    """Every (key, value) of a nested JSON document, depth first."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def llama_build_flags(version: str | None, explicit: str | None = None) -> str | None:
    """The CMAKE_ARGS llama-cpp-python was built with: given by the Makefile, or read from the
    wheelhouse the Makefile installs from (it records them beside the wheel)."""
    if explicit:
        return explicit
    if not version:
        return None
    found = sorted(Path.home().glob(f".cache/edgeready/wheelhouse/llama-cpp-python-{version}-*/CMAKE_ARGS"))
    flags = sorted({p.read_text(encoding="utf-8").strip() for p in found})
    return " | ".join(flags) if flags else None


def _llama_system_info() -> str | None:
    # Only when the verdict does not carry it (a run without a device adapter): loading the library
    # costs a fraction of a second and no model.
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info()
        return info.decode() if isinstance(info, bytes) else str(info)
    except Exception:
        return None


def environment_info(verdict: dict[str, Any], llama_cmake_args: str | None = None) -> dict[str, str]:
    """The environment section of the report, from verdict.json (what the run used) first."""
    versions = verdict.get("versions") or {}
    host = verdict.get("host") or {}
    run = verdict.get("run") or {}
    info: dict[str, str] = {
        "edgeready": str(verdict.get("edgeready", "?")),
        "run.created": str(verdict.get("created", "?")),
        "run.overall": str(verdict.get("overall", "?")),
        "run.targets": ", ".join(run.get("targets") or []),
        "run.limit": str(run.get("limit")),
        "python": str(versions.get("python") or platform.python_version()),
        "host.system": str(host.get("system") or platform.platform()),
        "host.cpu": cpu_model(),
    }
    for dist, ver in sorted(versions.items()):
        if dist != "python":
            info[dist] = str(ver)
    if "llama-cpp-python" not in info:
        with contextlib.suppress(metadata.PackageNotFoundError):
            info["llama-cpp-python"] = metadata.version("llama-cpp-python")
    flags = llama_build_flags(info.get("llama-cpp-python"), llama_cmake_args)
    if flags:
        info["llama.cpp.build_flags"] = flags
    system_info = next((str(v) for k, v in _walk(verdict) if k == "system_info" and v), None) or _llama_system_info()
    if system_info:
        info["llama.cpp.system_info"] = system_info.strip()
    for v in verdict.get("verdicts", []):
        sha = next((str(x) for k, x in _walk(v.get("gates", {})) if k == "sha256" and isinstance(x, str)
                    and len(x) == 64), None)
        if sha:
            info[f"model.{v['candidate']}.sha256"] = sha
    return info


def write_categories(results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "categories.json"
    path.write_text(json.dumps(CATEGORIES, indent=2) + "\n", encoding="utf-8")
    return path


def copy_history(report_dir: Path, results_dir: Path, reports_dir: Path | None = None) -> list[Path]:
    """Bring a previous report's history into the next run, so trends span runs.

    Allure 2 layout: `<report>/history/*.json` -> `<results>/history/` (where Allure 2's CLI looks) and
    `<results>/` itself (Allure 3's reader reads only the top level of a results directory).
    Allure 3 and edgeready's own per-metric history: the JSON-lines files that `make report` leaves in
    `<report>/history/` are merged into `reports_dir` (default: the results directory's parent), where
    allurerc.mjs's historyPath and report_cli look. Returns the files written or updated.
    """
    src = report_dir / "history"
    if not src.is_dir():
        return []
    reports_dir = reports_dir or results_dir.parent
    written: list[Path] = []
    for f in sorted(src.iterdir()):
        if not f.is_file():
            continue
        if f.suffix == ".json":
            for dst_dir in (results_dir / "history", results_dir):
                dst_dir.mkdir(parents=True, exist_ok=True)
                written.append(Path(shutil.copy2(f, dst_dir / f.name)))
        elif f.name in (ALLURE3_HISTORY, METRIC_HISTORY) and merge_jsonl(f, reports_dir / f.name):
            written.append(reports_dir / f.name)
    return written


def attach_plots(results_dir: Path, plots: Iterable[Path]) -> Path | None:
    """Attach the plots to the report as Allure 3 global attachments. Fixed file names: rendering the
    report again replaces them instead of piling up copies."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for old in results_dir.glob(f"{PLOT_PREFIX}*-attachment.png"):
        old.unlink()
    attachments = []
    for p in plots:
        source = f"{PLOT_PREFIX}{p.stem}-attachment.png"
        shutil.copyfile(p, results_dir / source)
        attachments.append({"name": p.name, "source": source, "type": "image/png"})
    path = results_dir / GLOBALS_FILE
    if not attachments:
        path.unlink(missing_ok=True)
        return None
    path.write_text(json.dumps({"attachments": attachments, "errors": []}, indent=2) + "\n", encoding="utf-8")
    return path
