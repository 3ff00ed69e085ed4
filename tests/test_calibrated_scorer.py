"""The calibrated sentence scorer (edgeready/selfcheck/calibrated.py): its shipped calibration, bad calibration
files, the probability it returns, and how a target names it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeready.errors import ConfigError
from edgeready.selfcheck import make_scorer
from edgeready.selfcheck.cached import scorer_identity
from edgeready.selfcheck.calibrated import DEFAULT_CALIBRATION, CalibratedScorer, load_calibration
from edgeready.selfcheck.signals import COMBINED, PASSAGE_SIGNALS, SENTENCE_SIGNALS, SIGNALS, Calibration
from edgeready.targets import load_target
from tests.conftest import ROOT, SHARED_DATA

DEV = SHARED_DATA / "wikibio" / "dev.jsonl"
SHIPPED = json.loads(DEFAULT_CALIBRATION.read_text())


def test_the_default_scorer_is_the_calibrated_one_with_the_shipped_file():
    scorer = make_scorer()
    assert isinstance(scorer, CalibratedScorer) and scorer.calibration_path == DEFAULT_CALIBRATION
    assert scorer.calibration.columns == COMBINED
    prov = scorer.provenance
    assert prov["data"] == "dev.jsonl" and len(prov["data_sha256"]) == 64
    assert prov["sentences"] == sum(prov["labels"].values())
    assert prov["cross_validated"]["grouped_by"] == "passage"


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "cal.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def shipped_with(**model: object) -> dict:
    return {"model": {**SHIPPED["model"], **model}, "provenance": {}}


@pytest.mark.parametrize(("doc", "message"), [
    ("{not json", "not a readable JSON calibration file"),
    ({"provenance": {}}, "model: missing"),
    ({"model": {k: v for k, v in SHIPPED["model"].items() if k != "scale"}}, "model.scale: missing"),
    (shipped_with(columns=[*COMBINED[:-1], "model_logprob"]), "model.columns: unknown signal 'model_logprob'"),
    (shipped_with(columns=[]), "model.columns: a non-empty list"),
    (shipped_with(weights=SHIPPED["model"]["weights"][:-1]), "model.weights: 13 numbers expected"),
    (shipped_with(mean=["a"] * 13), "model.mean: 13 numbers expected"),
    (shipped_with(scale=[0.0] * 13), "model.scale: every scale must be positive"),
    (shipped_with(intercept=True), "model.intercept: a number expected"),
])
def test_a_bad_calibration_file_names_itself_and_its_key(tmp_path, doc, message):
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError, match=message) as exc:
        CalibratedScorer(calibration=path)
    assert str(path) in str(exc.value)


def test_a_missing_calibration_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.json: calibration file not found"):
        load_calibration(tmp_path / "nope.json")


@given(st.lists(st.floats(-5, 5), min_size=len(COMBINED), max_size=len(COMBINED)),
       st.floats(-3, 3), st.integers(0, 2**31 - 1), st.integers(0, len(COMBINED) - 1), st.floats(0.01, 5))
def test_a_calibration_gives_probabilities_that_follow_the_sign_of_each_weight(weights, intercept, seed, col, step):
    cal = Calibration(COMBINED, tuple([0.5] * len(COMBINED)), tuple([0.3] * len(COMBINED)), tuple(weights),
                      intercept)
    x = np.random.default_rng(seed).random((20, len(SIGNALS)))
    p = cal.predict(x)
    assert np.all((p >= 0) & (p <= 1))
    raised = x.copy()
    raised[:, SIGNALS.index(COMBINED[col])] += step
    moved = cal.predict(raised) - p
    # More of a signal with a positive weight never lowers the probability (and the reverse).
    assert np.all(moved * np.sign(weights[col]) >= -1e-12)


@pytest.fixture(scope="module")
def scorer() -> CalibratedScorer:
    s = CalibratedScorer(threads=1)
    s.load()
    return s


def test_passage_signals_are_the_means_of_the_sentence_signals(scorer):
    sentences = ["Paris is the capital of France.", "It was founded by Vikings in 1850.", "It lies on the Seine."]
    x = scorer.extractor.signals(sentences, ["Paris is the capital and largest city of France, on the Seine."])
    for passage, sentence in PASSAGE_SIGNALS.items():
        column = x[:, SIGNALS.index(passage)]
        assert np.allclose(column, x[:, SENTENCE_SIGNALS.index(sentence)].mean())


def test_an_unsupported_sentence_is_more_likely_not_factual(scorer):
    evidence = ["Paris is the capital and largest city of France. It lies on the Seine river in the north.",
                "Paris is the French capital, on the river Seine."]
    supported, invented = scorer.score(
        ["Paris is the capital of France.", "Paris was founded by Norwegian whalers in 1921 near Lake Tahoe."],
        evidence)
    assert 0 < supported < invented < 1
    assert scorer.extractor._vectors == {}  # nothing kept between passages


def test_the_score_store_key_changes_with_the_calibration(tmp_path):
    other = write(tmp_path, shipped_with(intercept=SHIPPED["model"]["intercept"] + 1))
    a = scorer_identity(CalibratedScorer(), {})
    b = scorer_identity(CalibratedScorer(calibration=other), {"calibration": str(other)})
    assert a["extra"]["calibration"] != b["extra"]["calibration"]
    assert a["extra"]["signal_code"] == b["extra"]["signal_code"]


HALLUCINATION = (ROOT / "thresholds" / "device" / "default.yaml").read_text()


def target_with(tmp_path: Path, old: str, new: str) -> Path:
    assert old in HALLUCINATION
    path = tmp_path / "device" / "t.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HALLUCINATION.replace(old, new))
    return path


def test_a_target_with_an_option_its_scorer_lacks_is_a_config_error(tmp_path):
    path = target_with(tmp_path, "    scorer: calibrated\n", "    scorer: calibrated\n    scorer_options: {n: 2}\n")
    with pytest.raises(ConfigError, match=r"scorer_options\.n: not an option of the calibrated scorer") as exc:
        load_target(path)
    assert str(path) in str(exc.value)


def test_a_target_naming_a_bad_calibration_file_is_a_config_error(tmp_path):
    bad = write(tmp_path, shipped_with(columns=["nope"]))
    path = target_with(tmp_path, "    scorer: calibrated\n",
                       f"    scorer: calibrated\n    scorer_options: {{calibration: {bad}}}\n")
    with pytest.raises(ConfigError, match=r"model\.columns: unknown signal 'nope'") as exc:
        load_target(path)
    assert str(path) in str(exc.value) and str(bad) in str(exc.value)


@pytest.mark.e2e
def test_make_calibrate_on_the_dev_half_reproduces_the_shipped_coefficients():
    """The shipped numbers are what `make calibrate` fits on ../shared's dev half, not numbers typed in."""
    from edgeready.selfcheck.signals import Combination, SignalExtractor
    from edgeready.selfcheck.validation import load_labelled, signal_table

    assert hashlib.sha256(DEV.read_bytes()).hexdigest() == SHIPPED["provenance"]["data_sha256"]
    table = signal_table(SignalExtractor(), load_labelled(DEV))
    refit = Combination().fit(table.x, table.nonfactual).calibration()
    shipped, _ = load_calibration(DEFAULT_CALIBRATION)
    assert refit.columns == shipped.columns
    # Embeddings may differ in their last bits with another thread count or CPU.
    for got, want in ((refit.mean, shipped.mean), (refit.scale, shipped.scale), (refit.weights, shipped.weights)):
        assert np.allclose(got, want, atol=1e-3)
    assert refit.intercept == pytest.approx(shipped.intercept, abs=1e-3)
