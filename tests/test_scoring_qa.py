"""Normalization and contains-gold matching: the rules every accuracy number rests on."""

import unicodedata

from hypothesis import assume, given
from hypothesis import strategies as st

from edgeready.scoring.qa import answer_part, contains_gold, exact_match, normalize, score_response

words = st.text(alphabet=st.characters(categories=["Lu", "Ll", "Nd"]), min_size=2, max_size=8)
phrases = st.lists(words, min_size=1, max_size=4).map(" ".join)


def test_normalize_case_punctuation_articles_whitespace_unicode():
    assert normalize("  The  Hague! ") == "hague"
    assert normalize("São Tomé") == normalize("Sao Tome") == "sao tome"
    assert normalize("Washington, D.C.") == normalize("Washington DC") == "washington dc"
    assert normalize("the U.S.A.") == "usa"
    assert normalize("ＡＢＣ corp") == "abc corp"  # full-width letters fold through NFKD


def test_answer_part_stops_at_first_newline():
    assert answer_part("  Paris\nQuestion: What is the capital of Rome?") == "Paris"
    assert answer_part("\n\nParis") == "Paris"


def test_rambling_after_the_answer_does_not_count():
    assert not contains_gold(" Lyon\nQuestion: ...\nAnswer: Paris", ["Paris"])


def test_contains_respects_word_boundaries():
    assert contains_gold("It is Rome.", ["Rome"])
    assert not contains_gold("Romeo", ["Rome"])
    assert not contains_gold("", ["Rome"])
    assert not contains_gold("Rome", [""])


def test_exact_match_beside_contains():
    s = score_response(" The Euro", ["euro"])
    assert s.correct and s.exact
    s = score_response(" The euro, since 2002", ["euro"])
    assert s.correct and not s.exact


@given(gold=phrases, before=phrases, after=phrases)
def test_gold_embedded_in_any_words_is_contained(gold, before, after):
    assume(normalize(gold))
    assert contains_gold(f"{before} {gold}, {after}", [gold])


@given(text=st.text(max_size=40))
def test_normalize_is_idempotent_and_clean(text):
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip() and "  " not in once
    assert not any(unicodedata.category(c)[0] in "PS" for c in once)
    assert once == once.casefold()


@given(gold=phrases)
def test_case_and_punctuation_never_change_a_match(gold):
    assume(normalize(gold))  # a gold made only of articles ("Þe" -> "the") matches nothing
    assert contains_gold(gold.upper() + "!", [gold.lower()])
    assert exact_match(f'"{gold.swapcase()}"', [gold])


@given(response=st.text(max_size=60), gold=phrases)
def test_exact_implies_contains(response, gold):
    if exact_match(response, [gold]):
        assert contains_gold(response, [gold])
