"""End to end: the hallucination gate on the real default model, with real sentence scorers."""

import json

import pytest

from tests.conftest import ROOT, SHARED_DATA, run_gate

FIXTURES = ROOT / "tests" / "fixtures" / "targets"
pytestmark = pytest.mark.e2e


def test_rate_interval_and_per_sentence_records(tmp_path):
    proc = run_gate("-m", "device and hallucination", "--target", str(FIXTURES / "e2e-hallucination.yaml"),
                    "--reports", str(tmp_path))
    v = json.loads((tmp_path / "verdict.json").read_text())["verdicts"][0]
    g = v["gates"]["hallucination"]
    assert g["status"] in ("pass", "fail"), proc.stdout[-3000:]
    assert proc.returncode == (0 if g["status"] == "pass" else 1)
    m = g["measurement"]
    assert 0 <= g["interval"]["low"] <= g["value"] <= g["interval"]["high"] <= 1
    assert g["checks"][0]["observed"] == g["interval"]["high"]
    assert m["n"] == m["details"]["passages_scored"] <= 3
    items = tmp_path / "items" / "gemma3-270m-q4km__e2e-hallucination__hallucination.jsonl"
    records = [json.loads(x) for x in items.open()]
    assert len(records) == 3
    scores = [s["score"] for r in records for s in r["sentences"]]
    assert len(scores) == m["details"]["sentences"] and all(0 <= s <= 1 for s in scores)
    assert sum(scores) / len(scores) == pytest.approx(g["value"], abs=1e-5)
    assert all(len(r["samples"]) == 2 and r["prompt"].startswith("This is a passage from Wikipedia about ")
               for r in records)
    # Each concept's prompt is evaluated once: the samples restore its state.
    prompt_tokens = m["details"]["prompt_tokens_evaluated"]
    assert prompt_tokens is not None and prompt_tokens <= 3 * 16


def test_nli_with_missing_model_is_a_clear_error(tmp_path):
    proc = run_gate("-m", "device and hallucination", "--target", str(FIXTURES / "e2e-nli-missing.yaml"),
                    "--reports", str(tmp_path))
    assert proc.returncode == 1 and " 1 error" in proc.stdout
    v = json.loads((tmp_path / "verdict.json").read_text())["verdicts"][0]
    err = v["gates"]["hallucination"]["error"]
    assert v["status"] == "error" and "ScorerUnavailable" in err and "/nonexistent/deberta-v3-large-mnli" in err


def test_wikibio_concepts_are_read_from_the_data_dir():
    from edgeready.gates.hallucination import load_concepts
    from edgeready.targets import ConceptSpec

    names, prov = load_concepts(ConceptSpec(kind="wikibio", path="wikibio/concepts.txt"), SHARED_DATA)
    assert len(names) == 238 and prov["path"].endswith("concepts.txt")
