"""End to end: the hallucination gate on the real default model, with real sentence scorers."""

import json
import math
from pathlib import Path

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
    assert m["n"] == m["details"]["passages_scored"] == 3
    items = tmp_path / "items" / "gemma3-270m-q4km__e2e-hallucination__hallucination.jsonl"
    records = [json.loads(x) for x in items.open()]
    assert len(records) == 3
    scores = [s["score"] for r in records for s in r["sentences"]]
    assert len(scores) == m["details"]["sentences"] and all(0 <= s <= 1 for s in scores)
    # A passage without a claim counts as one sentence at 1.
    silent = m["details"]["passages_without_claim"]
    assert silent == sum(1 for r in records if not r["sentences"])
    assert (sum(scores) + silent) / (len(scores) + silent) == pytest.approx(g["value"], abs=1e-5)
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
    from edgeready.datasets.sources import ConceptSpec, load_concepts

    names, prov = load_concepts(ConceptSpec(kind="wikibio", path="wikibio/concepts.txt"), SHARED_DATA)
    assert len(names) == 238 and prov["path"].endswith("concepts.txt")


def test_sequential_gate_stops_early_and_a_rerun_loads_neither_model(tmp_path):
    target = FIXTURES / "e2e-hallucination-sequential.yaml"
    args = ("-m", "device and hallucination", "--target", str(target), "--cache-dir", str(tmp_path / "cache"))
    proc = run_gate(*args, "--reports", str(tmp_path / "a"))
    g = json.loads((tmp_path / "a" / "verdict.json").read_text())["verdicts"][0]["gates"]["hallucination"]
    seq = g["measurement"]["sequential"]
    assert g["status"] == "pass" and proc.returncode == 0, proc.stdout[-3000:]
    # Far below its maximum (0.95), the test stops after a round or two of its 20-concept budget.
    assert seq["decision"] == "pass" and seq["stopped_by"] == "pass boundary" and seq["items_used"] < 20
    assert seq["reason"].startswith(f"stopped at n={seq['items_scored']} because the evidence")
    # The check compares the very log e-value the test stopped by with log(1/alpha) = log 20.
    assert g["checks"][0]["observed"] == seq["log_evalue_pass"] >= g["checks"][0]["threshold"] == pytest.approx(
        math.log(20))
    assert g["interval"]["method"] == "betting confidence sequence (passage level)"
    assert g["interval"]["low"] <= g["value"] <= g["interval"]["high"] < 0.95
    records = [json.loads(x) for x in Path(g["items_file"]).read_text().splitlines()]
    assert len(records) == seq["items_used"]
    passage = [r["score"] for r in records]
    assert g["value"] == pytest.approx(sum(passage) / len(passage))
    # Re-run: every generation and every passage's scores come from the store; no model is loaded.
    run_gate(*args, "--reports", str(tmp_path / "b"))
    h = json.loads((tmp_path / "b" / "verdict.json").read_text())["verdicts"][0]["gates"]["hallucination"]
    d = h["measurement"]["details"]
    assert (h["status"], h["value"], h["interval"]) == (g["status"], g["value"], g["interval"])
    # Passages without a claim call no scorer.
    assert d["cache_hits"] == (1 + 2) * seq["items_used"]
    assert d["score_cache_hits"] == sum(1 for r in records if r["sentences"])
    assert h["measurement"]["provenance"]["adapter"]["loaded"] is False
