"""The recorder: every gate result of a run, and the evidence file of each (reports/items/*.jsonl).

The reports themselves (verdict.json, summary.md, the terminal table) are written from these results by
edgeready/report.py at the end of the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeready.measurement import GateResult
from edgeready.secrets import Redactor

# The longest text kept in an evidence record (a response, a passage). A server may send megabytes of valid
# JSON; the evidence keeps the start with a marker and the original length, never the whole, never silently.
MAX_ITEM_CHARS = 20_000


@dataclass
class Recorder:
    reports_dir: Path
    # The values of the API-key variables in use: scrubbed from every result before anything is written.
    redactor: Redactor = field(default_factory=lambda: Redactor({}))
    results: list[GateResult] = field(default_factory=list)

    def record(self, result: GateResult) -> GateResult:
        """Keep the result, scrubbed of secrets, and write its per-item evidence to
        reports/items/<candidate>__<target>__<gate>.jsonl. Returns what was kept."""
        result = self.redactor.scrub(result)
        if result.measurement is not None:
            result.measurement.items = [_bounded(rec) for rec in result.measurement.items]
        if result.measurement is not None and result.measurement.items:
            items_dir = self.reports_dir / "items"
            items_dir.mkdir(parents=True, exist_ok=True)
            target = result.target.replace("/", "-")
            path = items_dir / f"{result.candidate}__{target}__{result.gate}.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for rec in result.measurement.items:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            result.items_file = str(path)
        self.results.append(result)
        return result


def _bounded(value: Any) -> Any:
    """`value` with every string longer than MAX_ITEM_CHARS cut, marked, and its length stated."""
    if isinstance(value, str) and len(value) > MAX_ITEM_CHARS:
        return f"{value[:MAX_ITEM_CHARS]}...[truncated by edgeready: {len(value)} characters in all]"
    if isinstance(value, dict):
        return {k: _bounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bounded(v) for v in value]
    return value
