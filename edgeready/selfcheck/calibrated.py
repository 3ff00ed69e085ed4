"""The default sentence scorer: the estimated probability that a sentence is not factual.

score = the logistic combination of the offline signals of signals.py (embedding support, unigram surprisal,
content words, numbers and names absent from the evidence, and their passage means), with the coefficients in
a calibration file. The shipped file, `calibration.json` beside this module, is fitted by `make calibrate` on
every labelled sentence of the WikiBio dev half (../shared/data/wikibio/dev.jsonl), with the real Wikipedia
paragraph as the evidence; its `provenance` holds the data's digest, the counts, the date and the
cross-validated figures of that fit (grouped by passage). Another labelled file in the same format gives
another calibration (`bench/validate_scorers.py --data FILE --write-calibration OUT`), used with
`scorer_options: {calibration: OUT}`.

What the probability means in the gate: calibrated against human labels with a factual reference as the
evidence. In the gate the evidence is the model's own N samples (SelfCheckGPT's protocol). The labelled data
here carries no samples of the model that wrote it, so calibration in that setting cannot be measured on it;
the gate's rate is "the expected share of non-factual sentences, if the samples were as reliable as a
reference" (docs/HALLUCINATION.md: what changes, and what was measured).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeready.errors import ConfigError
from edgeready.selfcheck.base import check_inputs
from edgeready.selfcheck.signals import SIGNALS, Calibration, SignalExtractor

DEFAULT_CALIBRATION = Path(__file__).with_name("calibration.json")
_FIELDS = ("columns", "mean", "scale", "weights", "intercept")


def load_calibration(path: str | Path) -> tuple[Calibration, dict[str, Any]]:
    """Read a calibration file: (the model, its provenance). Every defect is a ConfigError naming the file and
    the key."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: calibration file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON calibration file ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ConfigError(f"{path}: model: missing (a calibration file holds 'model' and 'provenance')")
    model = raw["model"]
    missing = [k for k in _FIELDS if k not in model]
    if missing:
        raise ConfigError(f"{path}: model.{missing[0]}: missing")
    columns = model["columns"]
    if not isinstance(columns, list) or not columns:
        raise ConfigError(f"{path}: model.columns: a non-empty list of signal names is needed")
    unknown = [c for c in columns if c not in SIGNALS]
    if unknown:
        # A signal this code cannot compute offline: an error, never a silent fallback.
        raise ConfigError(f"{path}: model.columns: unknown signal {unknown[0]!r}; known: {', '.join(SIGNALS)}")
    for key in ("mean", "scale", "weights"):
        values = model[key]
        if (not isinstance(values, list) or len(values) != len(columns)
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)):
            raise ConfigError(f"{path}: model.{key}: {len(columns)} numbers expected, one per column")
    if any(v <= 0 for v in model["scale"]):
        raise ConfigError(f"{path}: model.scale: every scale must be positive")
    if not isinstance(model["intercept"], int | float) or isinstance(model["intercept"], bool):
        raise ConfigError(f"{path}: model.intercept: a number expected")
    calibration = Calibration(tuple(columns), tuple(map(float, model["mean"])), tuple(map(float, model["scale"])),
                              tuple(map(float, model["weights"])), float(model["intercept"]))
    return calibration, dict(raw.get("provenance") or {})


def write_calibration(path: str | Path, calibration: Calibration, provenance: dict[str, Any]) -> None:
    model = {"columns": list(calibration.columns), "mean": list(calibration.mean), "scale": list(calibration.scale),
             "weights": list(calibration.weights), "intercept": calibration.intercept}
    Path(path).write_text(json.dumps({"model": model, "provenance": provenance}, indent=2) + "\n",
                          encoding="utf-8")


class CalibratedScorer:
    """P(not factual) per sentence from the signals and a calibration file (the shipped one by default)."""

    name = "calibrated"

    def __init__(self, calibration: str | Path | None = None, model: str | Path | None = None,
                 batch_size: int = 16, threads: int | None = None) -> None:
        from edgeready.selfcheck.embedding import EmbeddingScorer

        self.calibration_path = Path(calibration) if calibration is not None else DEFAULT_CALIBRATION
        # Read now: a bad file stops the gate before any model loads.
        self.calibration, self.provenance = load_calibration(self.calibration_path)
        self.embedding = EmbeddingScorer(model=model, batch_size=batch_size, threads=threads)
        self.extractor = SignalExtractor(self.embedding)

    def model_dir(self) -> Path:
        return self.embedding.model_dir()

    def identity(self) -> dict[str, Any]:
        """What besides this module decides the scores (for the score store's key): the calibration's numbers
        and the signal code."""
        here = Path(__file__).parent
        code = hashlib.sha256(b"".join((here / f).read_bytes() for f in ("signals.py", "ngram.py", "embedding.py")))
        return {"calibration": hashlib.sha256(self.calibration_path.read_bytes()).hexdigest()[:16],
                "signal_code": code.hexdigest()[:16]}

    def preflight(self) -> None:
        self.embedding.preflight()

    def load(self) -> Any:
        return self.embedding.load()

    def score(self, sentences: Sequence[str], evidence: Sequence[str]) -> list[float]:
        check_inputs(sentences, evidence)
        if not sentences:
            return []
        try:
            return [float(v) for v in self.calibration.predict(self.extractor.signals(sentences, evidence))]
        finally:
            self.extractor.forget()
