"""Question sets the gates draw from, and the deterministic sampler that picks from them.

- `webqsp`: WebQuestionsSP (Microsoft's original JSON), read from a path the caller supplies.
- `countries`: an embedded default set generated from the `countryinfo` and `pycountry` packages.
- `sampling`: seeded, order-independent, complexity-stratified sampling.
"""

from __future__ import annotations

from edgeready.datasets.countries import embedded_concepts, kb_provenance, load_countries_qa
from edgeready.datasets.errors import DatasetError
from edgeready.datasets.sampling import stratified_sample
from edgeready.datasets.webqsp import WebQSPLoad, load_webqsp, read_webqsp, webqsp_stats

__all__ = [
    "DatasetError",
    "WebQSPLoad",
    "embedded_concepts",
    "kb_provenance",
    "load_countries_qa",
    "load_webqsp",
    "read_webqsp",
    "stratified_sample",
    "webqsp_stats",
]
