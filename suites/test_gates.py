"""Every registered gate over every (candidate x target) pair whose target configures it.

One test per (gate, pair), selected with the markers `-m "<role> and <gate>"`: the gate gathers its inputs
from the run, measures (adapter -> responses -> scores -> measurement) and is judged against the target's
block. A measurement that cannot be made is an ERROR, a missed threshold a FAILED test with the step-1
advice. What each gate measures is its module's docstring in edgeready/gates/ (shown in the Allure report).
"""

from edgeready.plugin import attach_result, failure_text, junit_properties


def test_gate(run, pair, gate, measurement, record_property):
    result = run.judge(pair, measurement)
    attach_result(result)
    for name, value in junit_properties(result):  # --junitxml: CI test tabs show the numbers
        record_property(name, value)
    assert result.status == "pass", failure_text(result)
