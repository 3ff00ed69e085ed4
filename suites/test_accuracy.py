"""Generalization accuracy: the share of questions whose answer contains a gold answer.

The gate passes when the lower bound of the Wilson interval (at the target's confidence) is at
least the target's minimum. Evidence: reports/items/<candidate>__<target>__accuracy.jsonl.
"""

import pytest

from edgeready.plugin import attach_result

pytestmark = pytest.mark.accuracy


def test_generalization_accuracy(run, pair, measurement):
    result = run.judge(pair, measurement)
    attach_result(result)
    assert result.status == "pass", result.message()
