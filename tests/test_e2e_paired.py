"""Paired gates end to end: a quantized rung judged against the model it replaces, on the same questions.

Real models: the Q2_K and Q8_0 rungs quantized from the packaged Gemma 3 270M Q4_K_M (llama.cpp's quantizer,
about a second each), judged by `pytest -m device --candidate <rung> --baseline gemma3-270m-q4km`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeready.candidates import resolve_candidate
from edgeready.ladder import build_ladder
from tests.conftest import ROOT, run_gate

PAIRED = ROOT / "tests/fixtures/targets/e2e-paired.yaml"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rungs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rungs")
    base = resolve_candidate("gemma3-270m-q4km", ROOT / "candidates")
    manifests = build_ladder(base, out, ROOT / ".cache", quants=("Q8_0", "Q2_K"), prune=())
    return {m.stem.rsplit("-", 1)[-1]: m for m in manifests}


def _accuracy(reports: Path) -> dict:
    return json.loads((reports / "verdict.json").read_text())["verdicts"][0]["gates"]["accuracy"]


def test_the_q2k_rung_fails_non_inferiority_with_its_regressions_listed(rungs, tmp_path):
    proc = run_gate("-m", "device and accuracy", f"--candidate={rungs['q2k']}", "--baseline", "gemma3-270m-q4km",
                    f"--reports={tmp_path}")
    acc = _accuracy(tmp_path)
    pc = acc["measurement"]["paired"]
    assert proc.returncode == 1 and acc["status"] == "fail", proc.stdout[-2000:]
    check = {c["name"]: c for c in acc["checks"]}["non_inferiority"]
    assert not check["passed"] and pc["decision"] == "fail" and pc["source"] == "model"
    assert pc["regressions"] > pc["improvements"] and pc["loss"] > 0.05 and pc["flips"]
    flip = pc["flips"][0]
    assert flip["flip"] == "regression" and flip["baseline_response"] != flip["response"]
    assert "regressions" in acc["advice"] and "gemma3-270m-q4km" in acc["advice"]
    summary = (tmp_path / "summary.md").read_text()
    assert "## Against the baseline: regressions and ratios" in summary and flip["question"][:40] in summary
    items = [json.loads(x) for x in Path(acc["items_file"]).read_text().splitlines()]
    assert sum(r.get("flip") == "regression" for r in items) == pc["regressions"]


def test_the_q8_rung_passes_at_a_five_point_margin(rungs, tmp_path):
    proc = run_gate("-m", "device and accuracy", f"--candidate={rungs['q80']}", "--baseline", "gemma3-270m-q4km",
                    f"--reports={tmp_path}")
    acc = _accuracy(tmp_path)
    pc = acc["measurement"]["paired"]
    assert proc.returncode == 0 and acc["status"] == "pass", proc.stdout[-2000:]
    assert pc["decision"] == "pass" and pc["loss_upper"] < 0.05 and pc["margin"] == 0.05


def test_the_candidate_against_itself_passes_with_a_loss_of_exactly_zero(tmp_path):
    proc = run_gate("-m", "device and accuracy", "--target", str(PAIRED), f"--reports={tmp_path}")
    pc = _accuracy(tmp_path)["measurement"]["paired"]
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert pc["source"] == "same model" and pc["loss"] == 0 == pc["loss_upper"] and "itself" in pc["reason"]


def test_a_reports_folder_baseline_gives_the_named_models_numbers_without_it(rungs, tmp_path):
    base_run, named, folder = tmp_path / "base", tmp_path / "named", tmp_path / "folder"
    args = ("-m", "device and accuracy", "--target", str(PAIRED), f"--candidate={rungs['q2k']}")
    assert run_gate("-m", "device and accuracy", "--target", str(PAIRED), f"--reports={base_run}").returncode == 0
    run_gate(*args, "--baseline", "gemma3-270m-q4km", f"--reports={named}")
    proc = run_gate(*args, "--baseline", str(base_run), f"--reports={folder}")
    a, b = _accuracy(named)["measurement"]["paired"], _accuracy(folder)["measurement"]["paired"]
    assert b["source"] == "reports" and a["source"] == "model", proc.stdout[-2000:]
    same = ("n", "loss", "loss_lower", "loss_upper", "decision", "regressions", "improvements", "table",
            "log_evalue_pass")
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    # The folder's baseline is only its evidence: no adapter for it was described (none was built).
    assert "gemma3-270m-q4km" in b["baseline"] and str(base_run) in b["baseline"]


def test_bad_baselines_are_configuration_errors(tmp_path):
    def refused(*args: str) -> str:
        proc = run_gate("-m", "device and accuracy", *args, "--collect-only", f"--reports={tmp_path}")
        assert proc.returncode == 4, proc.stdout[-1500:]
        return proc.stderr

    assert "baseline 'no-such-model' is neither a candidate nor a reports folder" in refused("--baseline",
                                                                                              "no-such-model")
    wide = tmp_path / "wide.yaml"
    wide.write_text(PAIRED.read_text().replace("margins: {accuracy: 0.05}", "margins: {accuracy: 1.5}"))
    assert "margins.accuracy: 1.5 must be within (0, 1)" in refused(f"--target={wide}")
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text(PAIRED.read_text().replace("  candidate: gemma3-270m-q4km\n", ""))
    assert "none is given: set baseline.candidate or pass --baseline" in refused(f"--target={orphan}")
    small = tmp_path / "small.yaml"
    small.write_text(PAIRED.read_text().replace("sample_size: 100", "sample_size: 40"))
    assert "cannot be shown in 40 items even if no answer differs" in refused(f"--target={small}")
    # An earlier run measured with another seed cannot be compared item by item.
    other = tmp_path / "other"
    other.mkdir()
    (other / "verdict.json").write_text(json.dumps({"verdicts": [{"candidate": "m", "target": "e2e-paired", "gates": {
        "accuracy": {"measurement": {"provenance": {"dataset": "countries-kb (embedded)", "seed": 7,
                                                    "max_tokens": 16}}}}}]}))
    assert "seed: baseline 7, this run 0" in refused("--target", str(PAIRED), "--baseline", str(other))


def test_the_hallucination_gate_pairs_passages_concept_by_concept(rungs, tmp_path):
    target = ROOT / "tests/fixtures/targets/e2e-hallucination-paired.yaml"
    proc = run_gate("-m", "device and hallucination", f"--target={target}", f"--candidate={rungs['q2k']}",
                    f"--reports={tmp_path}")
    g = json.loads((tmp_path / "verdict.json").read_text())["verdicts"][0]["gates"]["hallucination"]
    pc = g["measurement"]["paired"]
    assert g["status"] in ("pass", "fail") and pc["source"] == "model", proc.stdout[-2000:]
    assert pc["n"] == g["n"] and pc["regressions"] + pc["improvements"] <= pc["n"] and pc["margin"] == 0.4
    items = [json.loads(x) for x in Path(g["items_file"]).read_text().splitlines()]
    scored = [r for r in items if r["sentences"]]
    # The loss is the mean of candidate minus baseline passage scores, over the same concepts.
    assert pc["loss"] == pytest.approx(sum(r["score"] - r["baseline_score"] for r in scored) / len(scored))
    assert {c["name"] for c in g["checks"]} == {"hallucination_rate", "non_inferiority"}
    # Against itself: exactly 0, with no second generation.
    proc = run_gate("-m", "device and hallucination", f"--target={target}", f"--reports={tmp_path / 'self'}")
    same = json.loads((tmp_path / "self" / "verdict.json").read_text())["verdicts"][0]["gates"]["hallucination"]
    assert same["measurement"]["paired"]["source"] == "same model" and same["measurement"]["paired"]["loss"] == 0


def test_memory_and_energy_are_judged_as_ratios_to_the_baseline(rungs, tmp_path):
    target = ROOT / "tests/fixtures/targets/e2e-paired-resources.yaml"
    proc = run_gate("-m", "device", f"--target={target}", f"--candidate={rungs['q80']}", f"--reports={tmp_path}")
    gates = json.loads((tmp_path / "verdict.json").read_text())["verdicts"][0]["gates"]
    mem, energy = gates["memory"], gates["energy"]
    pm, pe = mem["measurement"]["paired"], energy["measurement"]["paired"]
    assert mem["status"] == "pass" and pm["source"] == "model", proc.stdout[-2000:]
    # Q8_0 keeps more bits than its Q4_K_M base: its weights are larger, by the tensor tables' ratio.
    ratio = {c["name"]: c["observed"] for c in mem["checks"]}["weights_vs_baseline"]
    assert ratio == pytest.approx(mem["measurement"]["details"]["weights_mb"] / pm["table"]["baseline_weights_mb"])
    assert 1.05 < ratio < 1.3
    # Energy: batches of the two models interleaved in one meter window, an interval on their ratio.
    assert pe["source"] == "model" and pe["reason"].startswith("6 interleaved batch pairs")
    low, high = pe["table"]["ratio_interval"]
    assert 0 < low <= pe["table"]["ratio"] <= high
    assert {c["name"] for c in energy["checks"]} == {"energy_per_query", "energy_vs_baseline"}
