"""Helpers shared by the benchmarks in bench/: the model, the questions, the machine, the result line.

Every benchmark prints a human-readable account and, last, one line `BENCH_RESULT <json>` that
bench/run_all.py parses; `--json PATH` writes the same object to a file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Runnable as plain scripts from a checkout: `tests.conftest.run_gate` and the packages resolve from ROOT.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgeready.records import QAItem  # noqa: E402

DEFAULT_CANDIDATE = "gemma3-270m-q4km"
RESULT_PREFIX = "BENCH_RESULT "


def gemma_path() -> Path:
    """The packaged Gemma GGUF, assembled into the project's .cache/ as tests/conftest.py does."""
    from edgeready.candidates import materialize, resolve_candidate

    return materialize(resolve_candidate(DEFAULT_CANDIDATE, ROOT / "candidates"), ROOT / ".cache")[0]


def questions(n: int, seed: int = 0) -> list[QAItem]:
    """The embedded questions the accuracy gate asks for sample_size n and this seed (same sampler)."""
    from edgeready.datasets.countries import load_countries_qa
    from edgeready.datasets.sampling import stratified_sample

    return stratified_sample(load_countries_qa(), n, seed)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' (uncommitted changes)' if dirty else ''}"


def machine() -> dict[str, Any]:
    """Where the numbers came from. Load average matters: these hosts are shared, and a ratio measured
    in one run cancels most of the load, an absolute time does not."""
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "system": platform.platform(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "versions": {d: version(d) for d in ("edgeready", "llama_cpp_python", "lm_eval", "pytest", "numpy",
                                             "scipy", "torch", "datasets")},
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


class Stopwatch:
    """`with Stopwatch() as sw: ...; sw.s` -- wall seconds (perf_counter)."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.start


def emit(result: dict[str, Any], json_path: str | None) -> None:
    """The machine-readable result: last line of stdout, and a file when asked."""
    text = json.dumps(result, sort_keys=True, default=str)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(RESULT_PREFIX + text, flush=True)


def verdict_gate(reports: Path, gate: str = "accuracy") -> dict[str, Any]:
    """The first verdict's record of `gate` from a run's reports/verdict.json."""
    doc = json.loads((reports / "verdict.json").read_text())
    return doc["verdicts"][0]["gates"][gate]
