"""Accessibility: the memory the model needs.

Weights footprint from the GGUF tensor table and the measured peak resident memory of a fresh
process that loads the model and answers the gate's prompts, both within the target's limits.
"""

import pytest

from edgeready.plugin import attach_result

pytestmark = pytest.mark.memory


def test_accessibility_memory(run, pair, measurement):
    result = run.judge(pair, measurement)
    attach_result(result)
    assert result.status == "pass", result.message()
