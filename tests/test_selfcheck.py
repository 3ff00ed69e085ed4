"""Unit tests of the SelfCheck sentence scorers: ngram (pure Python), embedding (bundled MiniLM) and
NLI end to end on a tiny random classifier built here, so no test needs a hub download."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeready.selfcheck import ScorerUnavailable, SentenceScorer, make_scorer
from edgeready.selfcheck.ngram import NgramScorer, tokenize

SAMPLES = [
    "Marie Curie was a physicist and chemist born in Warsaw. She won the Nobel Prize in Physics in 1903.",
    "Marie Curie, born in Warsaw, was a chemist and physicist. In 1903 she won the Nobel Prize in Physics.",
    "The physicist Marie Curie was born in Warsaw and won the Nobel Prize in Physics in 1903.",
]
SUPPORTED = "Marie Curie was a physicist and chemist born in Warsaw."
UNSUPPORTED = "She later opened a bakery chain across Brazil selling pastries."


# ---------------------------------------------------------------- factory / protocol


def test_factory_builds_each_scorer_and_rejects_unknown_names() -> None:
    for name in ("calibrated", "ngram", "embedding", "nli"):
        scorer = make_scorer(name)
        assert isinstance(scorer, SentenceScorer)
    with pytest.raises(ValueError, match="unknown sentence scorer"):
        make_scorer("bertscore")


def test_a_single_string_is_rejected_not_scored_per_character() -> None:
    with pytest.raises(TypeError):
        make_scorer("ngram").score("one sentence.", SAMPLES)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="evidence is empty"):
        make_scorer("ngram").score([SUPPORTED], [])


# ---------------------------------------------------------------- ngram


def test_tokenizer_is_lowercase_words_without_punctuation() -> None:
    assert tokenize("Don’t PANIC, Mr. O'Neil: 42!") == ["don't", "panic", "mr", "o'neil", "42"]


@pytest.mark.parametrize("reduce", ["avg", "max"])
@pytest.mark.parametrize("n", [1, 2])
def test_ngram_supported_sentence_scores_lower(n: int, reduce: str) -> None:
    scores = NgramScorer(n=n, reduce=reduce).score([SUPPORTED, UNSUPPORTED], SAMPLES)  # type: ignore[arg-type]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] < scores[1]


def test_ngram_detailed_values_and_mapping() -> None:
    details = NgramScorer(reduce="avg").score_detailed([SUPPORTED, "...", UNSUPPORTED], SAMPLES)
    for d in details:
        assert d["max_neg_logprob"] >= d["avg_neg_logprob"] >= 0.0
        assert d["score"] == pytest.approx(1.0 - math.exp(-d["avg_neg_logprob"]))
    # A sentence without words claims nothing.
    assert details[1] == {"avg_neg_logprob": 0.0, "max_neg_logprob": 0.0, "n_tokens": 0.0, "score": 0.0}
    maxed = NgramScorer(reduce="max").score_detailed([SUPPORTED], SAMPLES)[0]
    assert maxed["score"] == pytest.approx(1.0 - math.exp(-maxed["max_neg_logprob"]))


def test_ngram_unigram_probability_is_add_k_over_all_passages() -> None:
    # Corpus: evidence "a a b" + main "a c" -> counts a=3, b=1, c=1; N=5, V=3 (+1 unseen slot), k=1.
    d = NgramScorer(n=1, k=1.0, reduce="avg").score_detailed(["a c"], ["a a b"])[0]
    expected = -(math.log(4 / 9) + math.log(2 / 9)) / 2
    assert d["avg_neg_logprob"] == pytest.approx(expected)
    assert d["max_neg_logprob"] == pytest.approx(-math.log(2 / 9))


@settings(max_examples=60, deadline=None)
@given(
    sentences=st.lists(st.text(max_size=60), min_size=1, max_size=6),
    evidence=st.lists(st.text(max_size=120), min_size=1, max_size=4),
    n=st.integers(min_value=1, max_value=3),
    reduce=st.sampled_from(["avg", "max"]),
)
def test_ngram_scores_always_in_unit_interval(
    sentences: list[str], evidence: list[str], n: int, reduce: str
) -> None:
    scores = NgramScorer(n=n, reduce=reduce).score(sentences, evidence)  # type: ignore[arg-type]
    assert len(scores) == len(sentences)
    assert all(0.0 <= s <= 1.0 for s in scores)


# ---------------------------------------------------------------- embedding


@pytest.fixture(scope="module")
def embedding_scorer() -> SentenceScorer:
    scorer = make_scorer("embedding")
    try:
        scorer.load()  # type: ignore[attr-defined]
    except ScorerUnavailable as exc:  # pragma: no cover - only where the bundled model is not installed
        pytest.skip(str(exc))
    return scorer


def test_embedding_paraphrase_scores_lower_than_unrelated(embedding_scorer: SentenceScorer) -> None:
    paraphrase = "In 1903 Curie was awarded the Nobel Prize for physics."
    scores = embedding_scorer.score([paraphrase, UNSUPPORTED], SAMPLES)
    assert len(scores) == 2
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] < scores[1]
    # A sentence copied from the evidence is (numerically) fully supported.
    assert embedding_scorer.score([SUPPORTED], [SUPPORTED + " Other text follows here."])[0] < 0.02


def test_embedding_missing_model_dir_is_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ScorerUnavailable, match="no-such-model"):
        make_scorer("embedding", model=missing).score([SUPPORTED], SAMPLES)


# ---------------------------------------------------------------- NLI on a tiny local classifier

VOCAB_TEXT = [
    "marie curie was a physicist born in warsaw",
    "she won the nobel prize in physics in 1903",
    "a bakery chain in brazil sells pastries",
]
CON_ENT_NEU = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}
ENT_NEU_CON = {0: "entailment", 1: "neutral", 2: "contradiction"}
MAX_LEN = 24


def _build_tiny_classifier(path: Path, id2label: dict[int, str]) -> Path:
    """A 2-layer BERT with hidden size 32, random weights (seeded), and a WordLevel tokenizer trained here."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        VOCAB_TEXT, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=MAX_LEN,
    )
    fast.save_pretrained(path)
    config = transformers.BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        # Large init so logits differ visibly from 0 and label-order mistakes change the scores.
        initializer_range=0.5,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    return path


def _manual_scores(path: Path, sentences: list[str], samples: list[str], ent: int, con: int) -> list[float]:
    """Reference implementation from the model's own logits, one pair at a time."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
    out = []
    for s in sentences:
        probs = []
        for p in samples:
            enc = tokenizer(p, s, truncation="only_first", max_length=MAX_LEN, return_tensors="pt")
            with torch.no_grad():
                logits = model(**enc).logits[0]
            e, c = float(logits[ent]), float(logits[con])
            probs.append(math.exp(c) / (math.exp(e) + math.exp(c)))
        out.append(sum(probs) / len(probs))
    return out


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-nli")
    return {
        "con_ent_neu": _build_tiny_classifier(root / "a", CON_ENT_NEU),
        "ent_neu_con": _build_tiny_classifier(root / "b", ENT_NEU_CON),
    }


NLI_SENTENCES = ["marie curie was a physicist", "a bakery chain in brazil", "she won the nobel prize"]
NLI_SAMPLES = [
    "marie curie was a physicist born in warsaw",
    "she won the nobel prize in physics in 1903",
    "a bakery chain in brazil sells pastries",
]


def test_nli_on_tiny_random_classifier_label_order(tiny_models: dict[str, Path]) -> None:
    got_a = make_scorer("nli", model=tiny_models["con_ent_neu"]).score(NLI_SENTENCES, NLI_SAMPLES)
    got_b = make_scorer("nli", model=tiny_models["ent_neu_con"]).score(NLI_SENTENCES, NLI_SAMPLES)
    want_a = _manual_scores(tiny_models["con_ent_neu"], NLI_SENTENCES, NLI_SAMPLES, ent=2, con=0)
    want_b = _manual_scores(tiny_models["ent_neu_con"], NLI_SENTENCES, NLI_SAMPLES, ent=0, con=2)
    assert got_a == pytest.approx(want_a, abs=1e-5)
    assert got_b == pytest.approx(want_b, abs=1e-5)
    # Same weights, labels 0 and 2 swapped: each pair's two-way softmax flips, so the scores sum to 1.
    assert [a + b for a, b in zip(got_a, got_b, strict=True)] == pytest.approx([1.0] * 3, abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in got_a + got_b)
    assert max(abs(a - 0.5) for a in got_a) > 0.01, "scores too close to 0.5 to detect an order mistake"


def test_nli_on_tiny_random_classifier_batching_and_averaging(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["ent_neu_con"]
    one = make_scorer("nli", model=path, batch_size=1).score(NLI_SENTENCES, NLI_SAMPLES)
    four = make_scorer("nli", model=path, batch_size=4).score(NLI_SENTENCES, NLI_SAMPLES)
    assert one == pytest.approx(four, abs=1e-5)
    scorer = make_scorer("nli", model=path, batch_size=4)
    per_sample = [scorer.score(NLI_SENTENCES, [p]) for p in NLI_SAMPLES]
    means = [sum(col) / len(col) for col in zip(*per_sample, strict=True)]
    assert four == pytest.approx(means, abs=1e-5)


def test_nli_on_tiny_random_classifier_truncates_long_premise(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["ent_neu_con"]
    scorer = make_scorer("nli", model=path, batch_size=2)
    assert scorer.max_length == MAX_LEN  # type: ignore[attr-defined]
    long_premise = " ".join(VOCAB_TEXT * 30)  # ~600 tokens, far past MAX_LEN
    sentence = "she won the nobel prize"
    enc = scorer._encode([long_premise], [sentence])  # type: ignore[attr-defined]
    ids = enc["input_ids"][0].tolist()
    assert len(ids) == MAX_LEN
    # 'only_first': the premise was cut, the hypothesis (between the last two [SEP]s) is intact.
    tokenizer = scorer._tokenizer  # type: ignore[attr-defined]
    assert tokenizer.decode(ids).endswith("[SEP] she won the nobel prize [SEP]")
    got = scorer.score([sentence], [long_premise, "marie curie"])
    want = _manual_scores(path, [sentence], [long_premise, "marie curie"], ent=0, con=2)
    assert got == pytest.approx(want, abs=1e-5)
    # A hypothesis longer than the model can read is cut too, rather than crashing.
    assert len(scorer.score([" ".join(VOCAB_TEXT * 5)], ["marie curie"])) == 1


def test_nli_labels_are_found_by_name_or_error(tmp_path: Path) -> None:
    from edgeready.selfcheck.nli import label_indices

    assert label_indices(CON_ENT_NEU) == (2, 0)
    assert label_indices({0: "Entailment", 1: "Contradiction"}) == (0, 1)
    with pytest.raises(ScorerUnavailable, match="entailment / contradiction"):
        label_indices({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    path = _build_tiny_classifier(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(ScorerUnavailable, match="LABEL_0"):
        make_scorer("nli", model=path).score(["a"], ["b"])
    # A user who knows the order from the model card states it explicitly.
    stated = make_scorer("nli", model=path, labels={"entailment": 1, "contradiction": 0})
    got = stated.score(NLI_SENTENCES, NLI_SAMPLES)
    assert got == pytest.approx(_manual_scores(path, NLI_SENTENCES, NLI_SAMPLES, ent=1, con=0), abs=1e-5)
    with pytest.raises(ScorerUnavailable, match="out of range"):
        make_scorer("nli", model=path, labels={"entailment": 0, "contradiction": 7}).score(["a"], ["b"])


def test_nli_missing_model_path_raises_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "deberta-v3-large-mnli"
    with pytest.raises(ScorerUnavailable) as err:
        make_scorer("nli", model=str(missing)).score(["a sentence"], ["a sample"])
    assert str(missing) in str(err.value)
    assert "huggingface-cli download" in str(err.value)


def test_nli_uncached_hub_id_raises_unavailable_without_download() -> None:
    hub_id = "edgeready-tests/no-such-mnli-model"
    with pytest.raises(ScorerUnavailable, match=hub_id):
        make_scorer("nli", model=hub_id).score(["a sentence"], ["a sample"])
