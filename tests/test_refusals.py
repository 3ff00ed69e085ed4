"""What a run refuses before any model loads, and what a refused run leaves behind (issue 19, items 3, 11, 12).

Each test runs the gate suites in a fresh pytest process, as CI would, on input a careless user writes.
"""

from __future__ import annotations

import json

from tests.conftest import ROOT, SHARED_DATA, run_gate

DEFAULT = ROOT / "thresholds" / "device" / "default.yaml"


def _stale_reports(reports):
    """What an earlier, passing run left: a pass, its evidence and its Allure results."""
    (reports / "items").mkdir(parents=True)
    (reports / "items" / "old__default__accuracy.jsonl").write_text("{}\n")
    (reports / "allure-results").mkdir()
    (reports / "allure-results" / "old-result.json").write_text("{}")
    (reports / "verdict.json").write_text(json.dumps({"overall": "pass", "verdicts": []}))


def test_a_refused_run_replaces_an_earlier_pass(tmp_path):
    reports = tmp_path / "r"
    _stale_reports(reports)
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.read_text().replace("min_accuracy:", "min_acuracy:"))
    proc = run_gate("-m", "device", f"--target={bad}", f"--reports={reports}")
    assert proc.returncode == 4 and "min_acuracy: unknown key" in proc.stderr
    verdict = json.loads((reports / "verdict.json").read_text())
    assert verdict["overall"] == "error" and "min_acuracy" in verdict["note"] and verdict["verdicts"] == []
    assert "ERROR" in (reports / "summary.md").read_text()
    assert not (reports / "items").exists() and not (reports / "allure-results").exists()


def test_a_missing_dataset_file_is_a_configuration_error_naming_the_key(tmp_path):
    target = tmp_path / "t.yaml"
    text = DEFAULT.read_text().replace("dataset: {kind: countries-kb}", "dataset: {kind: webqsp, path: nope.json}")
    assert text != DEFAULT.read_text()
    target.write_text(text)
    proc = run_gate("-m", "device and accuracy", f"--target={target}", f"--data-dir={tmp_path}",
                    f"--reports={tmp_path / 'r'}")
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "nope.json" in s)
    assert proc.returncode == 4, proc.stdout[-2000:]
    assert f"{target}:{line}: gates.accuracy.dataset.path: dataset file not found: {tmp_path / 'nope.json'}" \
        in proc.stderr


def test_validation_considers_only_the_gates_that_will_run(tmp_path):
    # 3 items cannot carry the default's sequential accuracy gate; the hallucination gate does not care.
    proc = run_gate("-m", "device and accuracy", "--limit", "3", "--collect-only", f"--reports={tmp_path}")
    assert proc.returncode == 4 and "gates.accuracy" in proc.stderr
    proc = run_gate("-m", "device and hallucination", "--limit", "3", "--collect-only", f"--reports={tmp_path}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "hallucination:gemma3-270m-q4km@default" in proc.stdout


def test_a_data_file_of_a_deselected_gate_is_not_required(tmp_path):
    target = tmp_path / "t.yaml"
    target.write_text(DEFAULT.read_text().replace("dataset: {kind: countries-kb}",
                                                  "dataset: {kind: webqsp, path: nope.json}"))
    proc = run_gate("-m", "device and memory", f"--target={target}", "--collect-only", f"--reports={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_shared_webqsp_is_found_when_present():
    # The shipped path is relative to --data-dir (../shared/data by default): validation resolves it.
    proc = run_gate("-m", "device and accuracy", "--target", str(ROOT / "tests/fixtures/targets/e2e-webqsp.yaml"),
                    "--collect-only")
    assert (proc.returncode == 0) == (SHARED_DATA / "webqsp").is_dir(), proc.stderr[-2000:]
