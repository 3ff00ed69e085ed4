"""The shape of the code: layering, the gate registry as the one place gates are declared, and packaging.

These keep the middle layer from rotting again: import-linter's contracts (pyproject.toml), functions short
enough to read, every package folder installed inside `edgeready`, and a gate added from outside the
package (tests/fixtures/length_gate.py) running end to end through pytest on the real default model.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from edgeready.gates import gate_names, gates
from edgeready.schema import ROLES
from tests.conftest import ROOT, run_gate

MAX_FUNCTION_LINES = 60


def test_import_layers_and_no_cycles():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def _long_functions(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(folder.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_a_screen():
    assert _long_functions(ROOT / "edgeready") + _long_functions(ROOT / "adapters") == []


def test_the_long_function_check_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n", encoding="utf-8")
    assert _long_functions(tmp_path) == [f"{tmp_path.name}/m.py:1 long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_every_package_folder_is_installed_inside_edgeready(tmp_path):
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    pkg = ROOT / "edgeready"
    folders = {".".join(p.parent.relative_to(pkg).parts) for p in pkg.rglob("__init__.py")}
    expected = {"edgeready" + (f".{f}" if f else "") for f in folders} | {"edgeready.adapters"}
    assert listed == expected
    assert conf["package-dir"] == {"edgeready.adapters": "adapters"}
    # Build the wheel as pip would and look inside: nothing may land as a top-level `adapters`.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("edgeready-*.whl"))
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "adapters" not in tops and "edgeready" in tops
    assert "edgeready/adapters/base.py" in zipfile.ZipFile(wheel).namelist()


def test_markers_come_from_the_registry(pytestconfig):
    markers = " ".join(pytestconfig.getini("markers"))
    for name in (*ROLES, *gate_names()):
        assert f"{name}:" in markers
    assert [g.name for g in gates()][:1] == ["conformance"]  # the first tier runs first
    assert set(gate_names()) >= {"accuracy", "hallucination", "memory", "energy", "latency", "conformance"}


def test_a_gate_with_a_bad_declaration_is_refused():
    from edgeready.gates import Gate, register
    from edgeready.schema import GateConfig

    class Cfg(GateConfig):
        pass

    with pytest.raises(TypeError, match="identifier"):
        register(type("Bad", (Gate,), {"name": "not a name", "config": Cfg, "description": "x"}))
    with pytest.raises(TypeError, match="role marker"):
        register(type("Bad", (Gate,), {"name": "device", "config": Cfg, "description": "x"}))
    with pytest.raises(TypeError, match="twice"):
        register(type("Bad", (Gate,), {"name": "accuracy", "config": Cfg, "description": "x"}))


@pytest.mark.e2e
def test_a_gate_added_outside_the_package_runs_end_to_end(tmp_path):
    """The extra gate touches only its module (schema class and docs inside); the run, the suite, the markers,
    the target schema and the reports pick it up from the registry."""
    target = ROOT / "tests/fixtures/targets/e2e-length.yaml"
    proc = run_gate("-p", "tests.fixtures.length_gate", "-m", "device and response_length", "--target", str(target),
                    "--reports", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout and "deselected" in proc.stdout
    v = json.loads((tmp_path / "verdict.json").read_text())["verdicts"][0]
    g = v["gates"]["response_length"]
    assert list(v["gates"]) == ["response_length"] and g["status"] == "pass" and g["n"] == 6
    assert 0 < g["value"] <= 12 and Path(g["items_file"]).is_file()
    # Judged against a stricter block of the same gate: the same code path fails, with the gate's advice.
    strict = tmp_path / "strict.yaml"
    strict.write_text(target.read_text().replace("max_mean_tokens: 12", "max_mean_tokens: 0.5"))
    proc = run_gate("-p", "tests.fixtures.length_gate", "-m", "response_length", "--target", str(strict),
                    "--reports", str(tmp_path / "strict"))
    assert proc.returncode == 1 and "1 failed" in proc.stdout and "answers too long" in proc.stdout
    # Without the plugin, the block is an unknown key of the target: a configuration error (exit 4).
    proc = run_gate("-m", "response_length", "--target", str(target), "--reports", str(tmp_path / "none"))
    assert proc.returncode == 4 and "gates.response_length: unknown key" in proc.stderr
