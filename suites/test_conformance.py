"""First tier for derived candidates: GGUF conformance with the base and KL divergence from it.

Runs before every other gate; a candidate that fails it is not sent to the expensive gates.
"""

import pytest

from edgeready.plugin import attach_result

pytestmark = pytest.mark.conformance


def test_conformance_with_base(run, pair, measurement):
    result = run.judge(pair, measurement)
    attach_result(result)
    assert result.status == "pass", result.message()
