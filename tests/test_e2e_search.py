"""End to end: derive two rungs of the ladder, then search for the most compact one that passes."""

import json

import pytest

from edgeready.candidates import resolve_candidate
from edgeready.ladder import build_ladder
from edgeready.search import main as search_main
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_search_rejects_the_far_rung_at_conformance_and_selects_the_next(tmp_path, capsys):
    base = resolve_candidate("gemma3-270m-q4km", ROOT / "candidates")
    gen = tmp_path / "generated"
    manifests = build_ladder(base, gen, ROOT / ".cache", quants=("Q8_0", "Q2_K"), prune=())
    assert {m.stem for m in manifests} == {"gemma3-270m-q80", "gemma3-270m-q2k"}
    code = search_main(["--target", str(ROOT / "tests/fixtures/targets/e2e-ladder.yaml"),
                        "--candidates", str(gen), "--reports", str(tmp_path / "search")])
    rows = json.loads((tmp_path / "search" / "search.json").read_text())
    assert code == 0
    assert [r["candidate"] for r in rows] == ["gemma3-270m-q2k", "gemma3-270m-q80"]  # smallest first
    q2k, q80 = rows
    assert q2k["status"] == "fail" and q2k["failed"] == ["conformance"] and q2k["advice"]["conformance"]
    assert q80["status"] == "pass" and q80["values"]["conformance"] < 0.05
    text = (tmp_path / "search" / "search.md").read_text()
    assert "Selected: **gemma3-270m-q80**" in text and "gemma3-270m-q2k / conformance" in text
