"""Every registered gate over every (candidate x target) pair whose target configures it.

One test per (gate, pair), selected with the markers `-m "<role> and <gate>"`: the gate gathers its inputs
from the run, measures (adapter -> responses -> scores -> measurement) and is judged against the target's
block. A measurement that cannot be made is an ERROR, a missed threshold a FAILED test with the step-1
advice. What each gate measures is its module's docstring in edgeready/gates/ (shown in the Allure report).
"""

from edgeready.plugin import attach_result


def test_gate(run, pair, gate, measurement):
    result = run.judge(pair, measurement)
    attach_result(result)
    assert result.status == "pass", result.message()
