"""The recorder: every gate result of a run, and the evidence file of each (reports/items/*.jsonl).

The reports themselves (verdict.json, summary.md, the terminal table) are written from these results by
edgeready/report.py at the end of the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeready.measurement import GateResult


@dataclass
class Recorder:
    reports_dir: Path
    results: list[GateResult] = field(default_factory=list)

    def record(self, result: GateResult) -> GateResult:
        """Keep the result; write its per-item evidence to reports/items/<candidate>__<target>__<gate>.jsonl."""
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
