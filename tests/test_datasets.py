"""Dataset loaders and sampler: real WebQSP counts, error messages, the embedded KB set, sampling laws."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeready.datasets import (
    DatasetError,
    countries,
    load_webqsp,
    read_webqsp,
    stratified_sample,
    webqsp_stats,
)
from edgeready.datasets.sampling import STRATA, allocate
from edgeready.records import QAItem

REPO_ROOT = Path(__file__).resolve().parents[1]
WEBQSP_TRAIN = Path("/work/shared/data/webqsp/WebQSP.train.json")
needs_webqsp = pytest.mark.skipif(not WEBQSP_TRAIN.is_file(), reason=f"{WEBQSP_TRAIN} not present")


# ---------------------------------------------------------------------------------------------------
# WebQSP on the real training file (read in place, never copied)


@pytest.fixture(scope="module")
def webqsp_raw() -> dict:
    return json.loads(WEBQSP_TRAIN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def webqsp_load():
    return read_webqsp(WEBQSP_TRAIN)


@needs_webqsp
def test_webqsp_file_matches_documented_parse0_counts(webqsp_raw):
    questions = webqsp_raw["Questions"]
    parse0 = Counter(len(q["Parses"][0]["InferentialChain"] or ()) for q in questions)
    assert len(questions) == 3098
    assert parse0 == {1: 1891, 2: 1153, 0: 54}


@needs_webqsp
def test_webqsp_counts(webqsp_load):
    assert webqsp_load.questions == 3098
    assert len(webqsp_load.skipped_no_answer) == 26
    assert len(webqsp_load.items) == 3098 - 26
    # 3 of the 54 chainless questions also have no answer; the other 51 are kept as complex.
    assert len(webqsp_load.no_chain) == 51
    assert webqsp_stats(webqsp_load.items) == {
        "total": 3072,
        "simple": 1878,
        "complex": 1143 + 51,
        "hops_1": 1878,
        "hops_2": 1143 + 51,
    }


@needs_webqsp
def test_webqsp_hops_reconcile_with_parse0(webqsp_raw, webqsp_load):
    """Kept items plus skipped questions add back up to the parse-0 counts (1,891 / 1,153 / 54)."""
    by_id = {q["QuestionId"]: q for q in webqsp_raw["Questions"]}
    kept = {item.id: item for item in webqsp_load.items}
    parse0 = Counter()
    for qid, question in by_id.items():
        chain = question["Parses"][0]["InferentialChain"]
        parse0[len(chain or ())] += 1
        if qid in kept and chain:
            assert kept[qid].hops == len(chain), qid
    assert parse0 == {1: 1891, 2: 1153, 0: 54}
    skipped = webqsp_load.skipped_no_answer
    skipped_hops = Counter(len(by_id[q]["Parses"][0]["InferentialChain"] or ()) for q in skipped)
    kept_hops = Counter(0 if item.id in webqsp_load.no_chain else item.hops for item in webqsp_load.items)
    assert kept_hops + skipped_hops == parse0


@needs_webqsp
def test_webqsp_answers_are_unioned_over_all_parses(webqsp_load):
    items = {item.id: item for item in webqsp_load.items}
    # Four parses: Tokyo, Minato, Minato, Tokyo -> each once, first-seen order.
    mitsubishi = items["WebQTrn-189"]
    assert mitsubishi.answers == ("Tokyo", "Minato")
    assert mitsubishi.question == "where is mitsubishi headquarters?"  # RawQuestion, not Processed
    assert mitsubishi.topic == "Mitsubishi Group"  # parse 0's TopicEntityName
    assert (mitsubishi.hops, mitsubishi.source) == (2, "webqsp")
    # Parse 1 adds two answers to parse 0's one.
    assert items["WebQTrn-253"].answers == ("Europe", "Eurasia", "Southeast Europe")
    assert items["WebQTrn-253"].hops == 1


@needs_webqsp
def test_webqsp_value_answers_and_empty_entity_names_fall_back_to_argument(webqsp_load):
    items = {item.id: item for item in webqsp_load.items}
    assert "1971-10-13" in items["WebQTrn-9"].answers  # a Value answer: EntityName is null
    assert "g.11b822ph2j" in items["WebQTrn-228"].answers  # an Entity whose EntityName is ""
    assert all(answer.strip() for item in webqsp_load.items for answer in item.answers)
    assert "WebQTrn-44" in webqsp_load.skipped_no_answer


@needs_webqsp
def test_webqsp_skip_rule_drops_chainless_questions(webqsp_load):
    skipped = load_webqsp(WEBQSP_TRAIN, no_chain="skip")
    assert len(skipped) == 3072 - 51
    assert not {item.id for item in skipped} & set(webqsp_load.no_chain)
    assert webqsp_stats(skipped)["complex"] == 1143


# ---------------------------------------------------------------------------------------------------
# WebQSP rules and errors on small files


def _question(qid: str, *parses: dict, text: str = "who?") -> dict:
    processed = text.rstrip("?")
    return {"QuestionId": qid, "RawQuestion": text, "ProcessedQuestion": processed, "Parses": list(parses)}


def _parse(chain: list[str] | None, *answers: dict, topic: str = "T") -> dict:
    return {"InferentialChain": chain, "TopicEntityName": topic, "Answers": list(answers)}


def _entity(name: str | None, mid: str = "m.0x") -> dict:
    return {"AnswerType": "Entity", "AnswerArgument": mid, "EntityName": name}


def _write(tmp_path: Path, document: object, name: str = "webqsp.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_webqsp_rules_on_a_small_file(tmp_path):
    document = {
        "Version": "1.0",
        "FreebaseVersion": "2015-08-09",
        "Questions": [
            _question("Q-0", _parse(["a"], _entity("X")), _parse(["a", "b"], _entity("Y"), _entity("X"))),
            # Parse 0 has no chain: hops come from the first parse that has one.
            _question("Q-1", _parse(None, _entity("Z")), _parse(["a", "b"], _entity(None, "m.0z"))),
            _question("Q-2", _parse(None, _entity("W"))),  # no chain anywhere
            _question("Q-3", _parse(["a"])),  # no answer
        ],
    }
    load = read_webqsp(_write(tmp_path, document))
    items = {item.id: item for item in load.items}
    assert items["Q-0"].answers == ("X", "Y") and items["Q-0"].hops == 1
    assert items["Q-1"].answers == ("Z", "m.0z") and items["Q-1"].hops == 2
    assert items["Q-2"].hops == 2 and items["Q-2"].complexity == "complex"
    assert load.skipped_no_answer == ("Q-3",)
    assert load.no_chain == ("Q-2",)
    assert (load.version, load.freebase_version) == ("1.0", "2015-08-09")
    assert [item.id for item in load_webqsp(load.path, no_chain="skip")] == ["Q-0", "Q-1"]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{not json", r"invalid JSON at line 1"),
        ([], r"top level must be a JSON object"),
        ({"Version": "1.0"}, r"top level: missing key 'Questions'"),
        ({"Questions": {}}, r"key 'Questions' must be a list"),
        (
            {
                "Questions": [
                    _question("Q-0", _parse(["a"], _entity("X"))),
                    {"RawQuestion": "?", "Parses": []},
                ]
            },
            r"Questions\[1\]: missing key 'QuestionId'",
        ),
        (
            {"Questions": [{"QuestionId": "Q-7", "Parses": []}]},
            r"Questions\[0\] \(Q-7\): missing key 'RawQuestion'",
        ),
        (
            {"Questions": [_question("Q-0", {"InferentialChain": ["a"]})]},
            r"Questions\[0\] \(Q-0\) Parses\[0\]: missing key 'Answers'",
        ),
    ],
)
def test_webqsp_bad_input_names_file_and_key(tmp_path, document, expected):
    path = tmp_path / "bad.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    with pytest.raises(DatasetError, match=expected) as raised:
        load_webqsp(path)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_webqsp_missing_file_names_it(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(DatasetError, match="file not found") as raised:
        load_webqsp(path)
    assert str(path) in str(raised.value)


def test_webqsp_rejects_unknown_no_chain_rule(tmp_path):
    with pytest.raises(ValueError, match="no_chain"):
        load_webqsp(_write(tmp_path, {"Questions": []}), no_chain="drop")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# The embedded countries set

ID_PATTERN = re.compile(
    r"kb-(capital|continent|currency|language)-[A-Z]{3}"
    r"|kb2-(currency|continent|language)-via-capital-[A-Z]{3}"
    r"|kb2-capital-via-borders-[A-Z]{3}"
)


@pytest.fixture(scope="module")
def kb_items() -> dict[str, QAItem]:
    return {item.id: item for item in countries.load_countries_qa()}


def test_countries_set_is_deterministic_and_sorted(kb_items):
    first, second = countries.load_countries_qa(), countries.load_countries_qa()
    assert first == second
    assert [item.id for item in first] == sorted(kb_items)
    # Rebuilt without the cache, the same list again.
    assert list(countries._build_items.__wrapped__(countries.DEFAULT_MIN_POPULATION)) == first


def test_countries_set_does_not_depend_on_hash_seed():
    """Two fresh interpreters with different string-hash seeds build the same set."""
    script = (
        "import hashlib\n"
        "from edgeready.datasets.countries import load_countries_qa as f, embedded_concepts as g\n"
        "print(hashlib.sha256(repr((f(), g())).encode()).hexdigest())"
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = [sys.executable, "-c", script]
        out = subprocess.run(run, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_countries_ids_are_unique_and_well_formed(kb_items):
    items = countries.load_countries_qa()
    assert len({item.id for item in items}) == len(items)
    assert all(ID_PATTERN.fullmatch(item.id) for item in items)
    assert all(item.hops == (1 if item.id.startswith("kb-") else 2) for item in items)
    assert {item.source for item in items} == {"countries-kb"}


def test_countries_set_has_both_complexities(kb_items):
    by_complexity = Counter(item.complexity for item in kb_items.values())
    assert by_complexity["simple"] >= 300
    assert by_complexity["complex"] >= 300
    assert 600 <= len(kb_items) <= 1000


def test_countries_every_item_has_clean_answers(kb_items):
    for item in kb_items.values():
        assert item.answers, item.id
        assert all(answer and answer == answer.strip() for answer in item.answers), item.id
        assert len(set(item.answers)) == len(item.answers), item.id
        assert item.question.endswith("?"), item.id


def test_countries_spot_facts(kb_items):
    assert kb_items["kb-capital-FRA"].answers == ("Paris",)
    assert kb_items["kb-capital-FRA"].question == "What is the capital of France?"
    assert kb_items["kb-capital-FRA"].topic == "France"
    assert kb_items["kb-continent-KEN"].answers == ("Africa",)
    assert {"Yen", "JPY", "Japanese Yen"} <= set(kb_items["kb-currency-JPN"].answers)
    assert {"Euro", "EUR"} == set(kb_items["kb-currency-DEU"].answers)
    assert {"US Dollar", "Dollar", "USD"} <= set(kb_items["kb-currency-USA"].answers)
    assert {"Yuan", "Renminbi"} <= set(kb_items["kb-currency-CHN"].answers)
    assert "Franc" in kb_items["kb-currency-SEN"].answers  # from "CFA Franc BCEAO"
    assert kb_items["kb-language-BRA"].answers == ("Portuguese",)
    assert "Greek" in kb_items["kb-language-GRC"].answers  # from "Modern Greek"
    assert {"English", "French"} <= set(kb_items["kb-language-CAN"].answers)
    assert kb_items["kb-continent-PER"].answers[0] == "South America"
    assert kb_items["kb-continent-MEX"].answers[0] == "North America"


def test_countries_two_hop_items_hide_the_bridge(kb_items):
    kenya = kb_items["kb2-currency-via-capital-KEN"]
    assert "Nairobi" in kenya.question and "Kenya" not in kenya.question
    assert "Shilling" in kenya.answers
    assert kb_items["kb2-continent-via-capital-PER"].answers[0] == "South America"
    assert "Lima" in kb_items["kb2-continent-via-capital-PER"].question
    assert kb_items["kb2-capital-via-borders-USA"].answers == ("Washington D.C.",)
    names = {c.alpha3: c.name for c in countries.selected_countries()}
    for item in kb_items.values():
        if item.hops == 2:
            bridge = names[item.id[-3:]]
            assert bridge.casefold() not in item.question.casefold(), item.id
            assert item.topic == "", item.id  # the hidden step must not reach a prompt


def test_countries_skips_territories_ambiguous_bridges_and_straddling_countries(kb_items):
    codes = {item.id[-3:] for item in kb_items.values()}
    assert not codes & {"HKG", "PRI", "MAC", "ATA", "PSE"}  # dependencies, no capital, no population
    assert "kb-continent-RUS" not in kb_items and "kb-continent-TUR" not in kb_items
    assert "kb2-currency-via-capital-MEX" not in kb_items  # "Mexico City" names the bridge
    assert "kb2-currency-via-capital-ISR" not in kb_items  # Jerusalem is two entries' capital
    assert "kb-currency-VEN" not in kb_items  # the KB's VEF is no longer in ISO 4217


def test_countries_population_threshold_is_a_knob():
    small = countries.load_countries_qa(min_population=50_000_000)
    assert 0 < len(small) < len(countries.load_countries_qa())
    assert {item.id[-3:] for item in small} <= {c.alpha3 for c in countries.selected_countries(50_000_000)}


def test_embedded_concepts_are_deterministic_known_names():
    concepts = countries.embedded_concepts()
    assert concepts == countries.embedded_concepts()
    assert len(concepts) == len(set(concepts)) >= 200
    assert concepts[:2] == ["China", "Beijing"]  # most populous first, country then capital
    assert {"France", "Paris", "Kenya", "Nairobi"} <= set(concepts)


def test_kb_provenance_reports_the_pinned_versions():
    assert countries.kb_provenance() == countries.KB_PINNED


# ---------------------------------------------------------------------------------------------------
# stratified_sample


@st.composite
def item_sets(draw) -> list[QAItem]:
    hops = draw(st.lists(st.sampled_from([0, 1, 1, 2, 3]), max_size=60))
    ids = draw(
        st.lists(
            st.text("abcdefgh0123456789", min_size=1, max_size=6),
            min_size=len(hops),
            max_size=len(hops),
            unique=True,
        )
    )
    return [QAItem(i, f"question {i}?", (f"answer {i}",), h, "test") for i, h in zip(ids, hops, strict=True)]


sizes = st.one_of(st.none(), st.integers(min_value=1, max_value=70))
seeds = st.integers(min_value=0, max_value=2**32)


def _effective(n: int | None, items: list[QAItem]) -> int:
    return len(items) if n is None else min(n, len(items))


@settings(max_examples=150, deadline=None)
@given(items=item_sets(), n=sizes, seed=seeds)
def test_sample_is_a_subset_of_the_right_size(items, n, seed):
    sample = stratified_sample(items, n, seed)
    assert len(sample) == _effective(n, items)
    assert len({item.id for item in sample}) == len(sample)
    assert set(sample) <= set(items)


@settings(max_examples=150, deadline=None)
@given(items=item_sets(), n=sizes, seed=seeds, data=st.data())
def test_sample_ignores_input_order(items, n, seed, data):
    shuffled = data.draw(st.permutations(items))
    assert stratified_sample(shuffled, n, seed) == stratified_sample(items, n, seed)


@settings(max_examples=150, deadline=None)
@given(items=item_sets(), n=sizes, seed=seeds)
def test_sample_strata_within_one_of_proportional(items, n, seed):
    sample = stratified_sample(items, n, seed)
    total, k = len(items), _effective(n, items)
    present = Counter(item.complexity for item in items)
    got = Counter(item.complexity for item in sample)
    for stratum in STRATA:
        if total:
            assert abs(got[stratum] - Fraction(k * present[stratum], total)) < 1
        if present[stratum] and k >= len(present):
            assert got[stratum] >= 1


@settings(max_examples=150, deadline=None)
@given(items=item_sets(), n=sizes, seed=seeds)
def test_sample_prefixes_stay_stratified(items, n, seed):
    sample = stratified_sample(items, n, seed)
    final = Counter(item.complexity for item in sample)
    seen: Counter[str] = Counter()
    for m, item in enumerate(sample, start=1):
        seen[item.complexity] += 1
        for stratum in STRATA:
            assert abs(seen[stratum] - Fraction(m * final[stratum], len(sample))) < 1


def test_sample_depends_on_seed_and_rejects_bad_sizes():
    items = [QAItem(f"q{i:03d}", "q?", ("a",), 1 + i % 2, "test") for i in range(100)]
    assert stratified_sample(items, 10, seed=0) != stratified_sample(items, 10, seed=1)
    assert sorted(stratified_sample(items, None, seed=0), key=lambda i: i.id) == items
    assert stratified_sample([], 5, seed=0) == []
    for bad in (0, -3):
        with pytest.raises(ValueError, match="sample size"):
            stratified_sample(items, bad, seed=0)


def test_allocate_uses_largest_remainder_and_keeps_small_strata():
    assert allocate([50, 50], 3) == [2, 1]  # tie on the remainder: earlier stratum first
    assert allocate([70, 30], 10) == [7, 3]
    assert allocate([97, 3], 10) == [9, 1]  # 0.3 rounds to 0, but a present stratum keeps one
    assert allocate([5, 0], 3) == [3, 0]
    with pytest.raises(ValueError):
        allocate([2, 2], 5)
