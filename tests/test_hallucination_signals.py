"""The offline signals of a sentence's support (edgeready/selfcheck/signals.py), their cross-validated
combination and the calibration figures (edgeready/selfcheck/validation.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeready.selfcheck.signals import SIGNALS, Combination, SignalExtractor, lexical_signals, unigram_signals
from edgeready.selfcheck.validation import (
    brier,
    expected_calibration_error,
    load_labelled,
    signal_report,
    signal_table,
)

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikibio" / "dev.jsonl"


def test_lexical_signals_count_what_the_evidence_lacks():
    evidence_tokens = {"born", "1942", "in", "paris", "he", "was", "a", "painter", "monet"}
    got = lexical_signals("He was born in 1942 in Lyon, a sculptor.", evidence_tokens, {"1942"})
    # content words: born, 1942? (digits are not content), lyon, sculptor -> 2 of 3 absent
    assert got["content_absent"] == pytest.approx(2 / 3) and got["numbers_absent"] == 0.0
    assert got["has_number"] == 1.0 and got["names_absent"] == 1.0  # "Lyon"
    none = lexical_signals("He was a painter.", evidence_tokens, set())
    assert none == {"content_absent": 0.0, "numbers_absent": 0.0, "has_number": 0.0, "names_absent": 0.0}


def test_unigram_signals_rank_unseen_words_as_surprising():
    evidence = ["Monet was a French painter born in Paris. Monet painted water lilies."]
    seen, unseen = unigram_signals(["Monet was a painter.", "Zorblax invented quantum toasters."], evidence)
    assert unseen[0] > seen[0] and unseen[1] >= seen[1]


@given(st.lists(st.floats(0, 1), min_size=1, max_size=50), st.integers(0, 2**31 - 1))
def test_calibration_figures_are_bounded_and_zero_when_perfect(probs, seed):
    y = np.random.default_rng(seed).integers(0, 2, len(probs))
    assert 0 <= brier(probs, y) <= 1 and 0 <= expected_calibration_error(probs, y) <= 1
    assert brier(y.astype(float), y) == 0 and expected_calibration_error(y.astype(float), y) == 0


def test_combination_learns_a_probability_from_signals():
    rng = np.random.default_rng(0)
    x = rng.random((400, len(SIGNALS)))
    column = SIGNALS.index("embedding_mean")
    y = (x[:, column] + 0.1 * rng.standard_normal(400) > 0.5).astype(int)  # only embedding_mean matters
    fitted = Combination().fit(x, y)
    probs = fitted.predict(x)
    assert probs.min() >= 0 and probs.max() <= 1 and np.corrcoef(probs, y)[0, 1] > 0.7
    calibration = fitted.calibration()
    weights = dict(zip(calibration.columns, calibration.weights, strict=True))
    assert abs(weights["embedding_mean"]) == max(abs(w) for w in weights.values())
    # The plain numbers a scorer ships predict what the fitted model does.
    assert np.allclose(calibration.predict(x), probs)


@pytest.mark.e2e
def test_signals_and_combination_on_wikibio_beat_random_with_grouped_folds():
    if not DEV.is_file():
        pytest.skip(f"labelled dev set not found at {DEV}")
    passages = load_labelled(DEV)[::4]  # 30 passages: the whole set runs in `make validate-scorers`
    table = signal_table(SignalExtractor(), passages)
    assert table.x.shape == (len(table.labels), len(SIGNALS)) and np.isfinite(table.x).all()
    rows = signal_report(table, folds=3)
    random = rows["combination"]["auc_pr"]["NonFact"]["random"]
    assert rows["combination"]["auc_pr"]["NonFact"]["auc_pr"] > random + 0.05
    assert rows["embedding_max"]["auc_pr"]["NonFact"]["auc_pr"] > random
    for row in rows.values():
        # Every fold holds passages of its own: the folds' sentences add up to the table's, each once.
        assert sum(f["sentences"] for f in row["folds"]) == len(table.labels)
        assert 0 < row["brier"] < 0.25 and 0 <= row["ece"] < 0.3
