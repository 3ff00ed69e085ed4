"""Shared helpers of the self-tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_server import FakeServer

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_gate(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the gate suites in a fresh pytest process, as a release engineer would (env: added variables)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}, **(env or {})}
    return subprocess.run(
        # -c: pytest picks its config and rootdir from path-like arguments before plugins define
        # the options, so a --reports in /tmp would otherwise become the rootdir.
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
    )


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    """A fake OpenAI-compatible server on loopback (tests/fake_server.py), for failures on demand."""
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    from edgeready.candidates import materialize, resolve_candidate

    return materialize(resolve_candidate("gemma3-270m-q4km", ROOT / "candidates"), ROOT / ".cache")[0]


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    from edgeready.candidates import materialize, resolve_candidate

    return materialize(resolve_candidate("smollm2-135m-q4", ROOT / "candidates"), ROOT / ".cache")[0]
