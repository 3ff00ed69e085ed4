"""Energy meters behind one interface, each reading labelled with how it was obtained.

Typical use around a batch of queries (see docs/ENERGY.md):

    meter = select_meter("auto", require="any", estimate_model=CpuPowerModel(4.0))
    window = measure_queries(meter, run_batch, min_window_s=2.0, min_rel_resolution=0.01, baseline_s=2.0)
    per_query = window.per_query(tokens=n_tokens, battery_mah=4500, nominal_v=3.87)
"""

from edgeready.energy.android import AndroidBatteryMeter, GaugeSample, parse_devices, parse_gauge
from edgeready.energy.composite import CompositeMeter
from edgeready.energy.derived import EnergyPerQuery, battery_percent, battery_wh, joules_to_mwh
from edgeready.energy.estimate import CpuPowerModel, CpuTimeEstimateMeter
from edgeready.energy.meter import Measurement, Meter, measuring
from edgeready.energy.method import QueryWindow, idle_baseline, measure_queries
from edgeready.energy.nvml import NvmlMeter
from edgeready.energy.rapl import RaplMeter, discover_domains, wrap_delta_uj
from edgeready.energy.reading import EnergyReading, EnergyUnavailable, Method, trapezoid_joules
from edgeready.energy.selection import select_meter

__all__ = [
    "AndroidBatteryMeter",
    "CompositeMeter",
    "CpuPowerModel",
    "CpuTimeEstimateMeter",
    "EnergyPerQuery",
    "EnergyReading",
    "EnergyUnavailable",
    "GaugeSample",
    "Measurement",
    "Meter",
    "Method",
    "NvmlMeter",
    "QueryWindow",
    "RaplMeter",
    "battery_percent",
    "battery_wh",
    "discover_domains",
    "idle_baseline",
    "joules_to_mwh",
    "measure_queries",
    "measuring",
    "parse_devices",
    "parse_gauge",
    "select_meter",
    "trapezoid_joules",
    "wrap_delta_uj",
]
