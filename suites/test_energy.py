"""Resource consumption: energy per query (battery on a phone, GPU or package energy on a server).

Measured by a hardware counter (RAPL, NVML, the Android fuel gauge) where one exists, otherwise
estimated from CPU time and the target's power model and labelled `estimated`; a target with
`require: measured` turns an estimate into an error. The gate compares the upper bound of the
interval across batches with `max_mwh_per_query`.
"""

import pytest

from edgeready.plugin import attach_result

pytestmark = pytest.mark.energy


def test_energy_per_query(run, pair, measurement):
    result = run.judge(pair, measurement)
    attach_result(result)
    assert result.status == "pass", result.message()
