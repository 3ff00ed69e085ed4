"""The baseline a candidate is compared with: a model (a candidate) or an earlier run's reports folder.

A reports folder (e.g. the last release's sign-off) is read, never re-run: its items files hold every
question's prompt, gold and answer, so a paired gate needs no model for the baseline. It is used only if it
answered the same items with the same settings; otherwise the run is refused, naming what differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeready.candidates import Candidate, resolve_candidate
from edgeready.errors import ConfigError

# What must be equal between a baseline run's gate and this run's, beside every item's prompt and gold.
SETTINGS = {"accuracy": ("dataset", "seed", "max_tokens")}


@dataclass(frozen=True)
class BaselineRun:
    """An earlier run's verdict for one (candidate, target) and the folder with its evidence."""

    folder: Path
    candidate: str
    target: str
    verdict: dict[str, Any] = field(repr=False, hash=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.candidate} (from {self.folder})"

    def gate(self, gate: str) -> dict[str, Any]:
        found = self.verdict.get("gates", {}).get(gate)
        if not found or not found.get("measurement"):
            raise ConfigError(f"baseline {self.folder}: its run has no measured {gate} gate for "
                              f"{self.candidate}@{self.target}")
        return found  # type: ignore[no-any-return]

    def records(self, gate: str) -> dict[str, dict[str, Any]]:
        """The baseline's per-item evidence of `gate`, by item id."""
        path = self.folder / "items" / f"{self.candidate}__{self.target.replace('/', '-')}__{gate}.jsonl"
        if not path.is_file():
            raise ConfigError(f"baseline {self.folder}: no evidence file {path}")
        out = {}
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rec = json.loads(line)
                out[str(rec["id"])] = rec
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}:{i}: not an evidence record ({type(exc).__name__}: {exc})") from None
        return out

    def check_settings(self, gate: str, settings: dict[str, Any]) -> None:
        """Refuse a baseline measured on another dataset or with other settings (named key by key)."""
        prov = self.gate(gate)["measurement"].get("provenance", {})
        differs = [f"{k}: baseline {prov.get(k)!r}, this run {settings.get(k)!r}"
                   for k in SETTINGS.get(gate, ()) if prov.get(k) != settings.get(k)]
        if differs:
            raise ConfigError(f"baseline {self.folder} ({self.candidate}@{self.target}) measured {gate} with other "
                              f"settings: {'; '.join(differs)}")


def resolve_baseline(ref: str, candidates_dir: Path, target_key: str) -> Candidate | BaselineRun:
    """A candidate (name, manifest or GGUF path) or, for a folder, an earlier run's reports."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return load_baseline_run(path, target_key)
    try:
        return resolve_candidate(ref, candidates_dir)
    except ConfigError as exc:
        raise ConfigError(f"baseline '{ref}' is neither a candidate nor a reports folder: {exc}") from None


def load_baseline_run(folder: Path, target_key: str) -> BaselineRun:
    """The folder's verdict for `target_key` (or its only verdict, measured under another target's name)."""
    path = folder / "verdict.json"
    if not path.is_file():
        raise ConfigError(f"baseline {folder}: no verdict.json (a reports folder of an earlier run is expected)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        verdicts = [v for v in doc["verdicts"] if isinstance(v, dict)]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a verdict.json ({type(exc).__name__}: {exc})") from None
    same = [v for v in verdicts if v.get("target") == target_key] or (verdicts if len(verdicts) == 1 else [])
    if len(same) != 1:
        found = ", ".join(f"{v.get('candidate')}@{v.get('target')}" for v in verdicts) or "none"
        raise ConfigError(f"baseline {folder}: expected one verdict for target {target_key}, found: {found}")
    v = same[0]
    return BaselineRun(folder, str(v["candidate"]), str(v["target"]), v)
