"""Offload routing: p95 end-to-end latency (network included) and the share of queries offloaded.

Latency is compared through a distribution-free upper bound of the 95th percentile, the share through
its Wilson upper bound; every fallback to the device (server unreachable) is listed in the verdict.
"""

import pytest

from edgeready.plugin import attach_result

pytestmark = pytest.mark.latency


def test_offload_latency_and_share(run, pair, measurement):
    result = run.judge(pair, measurement)
    attach_result(result)
    assert result.status == "pass", result.message()
