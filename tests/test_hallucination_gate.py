"""Pieces of the hallucination gate that need no model: text handling, concepts, the interval."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeready.gates.hallucination import (
    NO_CLAIM_SCORE,
    _bootstrap,
    _sentence_rate,
    choose_concepts,
    clean_passage,
    makes_claim,
    sentences_of,
)


def test_markup_is_dropped_and_text_kept():
    assert clean_passage("\n\n<blockquote>Peru is a country.</blockquote> ") == "Peru is a country."


def test_unfinished_last_sentence_is_dropped_but_a_lone_one_is_kept():
    assert sentences_of("Lima is the capital of Peru. It lies on the coast. The city was") == [
        "Lima is the capital of Peru.", "It lies on the coast."]
    assert sentences_of("Lima is the capital") == ["Lima is the capital"]
    # pysbd, not a regex: abbreviations do not end sentences.
    assert len(sentences_of("Dr. Smith lives in Washington D.C. now. He is 40.")) == 2


def test_concept_choice_is_seeded_and_order_free():
    names = [f"c{i}" for i in range(50)]
    assert choose_concepts(names, 5, 3) == choose_concepts(list(reversed(names)), 5, 3)
    assert choose_concepts(names, 5, 3) != choose_concepts(names, 5, 4)
    assert len(choose_concepts(names, 500, 0)) == 50


@settings(max_examples=30, deadline=None)
@given(data=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 6)), min_size=2, max_size=12))
def test_bootstrap_interval_brackets_the_rate(data):
    counts = np.array([c for _, c in data])
    sums = np.array([m * c for m, c in data])
    rate = sums.sum() / counts.sum()
    ci = _bootstrap(sums, counts, 0.95, 200, 0)
    assert 0 <= ci.low <= rate + 1e-9 and rate - 1e-9 <= ci.high <= 1 + 1e-9


def test_bootstrap_weights_passages_by_sentences():
    # Two passages: one sentence at 1.0 and nine at 0.0 -> rate 0.1, not the passage mean 0.5.
    ci = _bootstrap(np.array([1.0, 0.0]), np.array([1, 9]), 0.9, 500, 0)
    assert ci.low == pytest.approx(0.0) and ci.high == pytest.approx(1.0)
    single = _bootstrap(np.array([0.3]), np.array([3]), 0.95, 200, 0)
    assert (single.low, single.high) == (0.0, 1.0)


def test_fragments_of_degenerate_text_make_no_claim_and_sentences_do():
    # Sentences the 4-block prune of Gemma wrote (every sample repeated the same shapes).
    for fragment in ("1.", ".", "(i... .", "-''——— -—", "“Turkey--- 1.", "1.- (i... 1."):
        assert not makes_claim(fragment), fragment
    for sentence in ("Lima is the capital.", "It lies on the coast.", "Ankara is Turkey's capital city.",
                     "Москва — столица России."):
        assert makes_claim(sentence), sentence


@given(st.lists(st.lists(st.floats(0, 1), max_size=6), min_size=1, max_size=10))
def test_a_passage_without_a_claim_counts_as_one_unsupported_sentence(passages):
    records = [{"sentences": [{"score": v} for v in scores]} for scores in passages]
    empty = sum(1 for scores in passages if not scores)
    total = sum(sum(scores) for scores in passages) + empty * NO_CLAIM_SCORE
    count = sum(len(scores) for scores in passages) + empty
    assert _sentence_rate(records) == pytest.approx(total / count)
    # Saying nothing never lowers the rate below what the written sentences show.
    written = [r for r in records if r["sentences"]]
    if written:
        assert _sentence_rate(records) >= _sentence_rate(written) - 1e-12
