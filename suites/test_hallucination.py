"""Hallucination rate: SelfCheckGPT over WikiBio-style passages the model writes, 0..1, lower is better.

For each concept the model writes a greedy passage and N sampled ones; each sentence of the greedy
passage is scored against the samples by the target's scorer (nli, ngram or embedding). The gate
passes when the upper bound of the bootstrap interval over passages is within `max_rate`.
Evidence: reports/items/<candidate>__<target>__hallucination.jsonl (passages, samples, sentence scores).
"""

import pytest

from edgeready.plugin import attach_result

pytestmark = pytest.mark.hallucination


def test_hallucination_rate(run, pair, measurement):
    result = run.judge(pair, measurement)
    attach_result(result)
    assert result.status == "pass", result.message()
