"""The gates, one module each, and the registry they join (edgeready/gates/base.py).

Importing this package registers the built-in gates in their run order; a gate of your own registers the
same way from any module pytest imports (a conftest.py, a `-p` plugin, a pytest11 entry point). README's
"Adding a gate" says which files a new gate touches.
"""

from edgeready.gates import (  # noqa: F401 (register)
    accuracy,
    conformance,
    energy,
    hallucination,
    latency,
    memory,
    speed,
)
from edgeready.gates.base import Gate, RunResources, StashKey, gate_named, gate_names, gates, register, unregister

__all__ = ["Gate", "RunResources", "StashKey", "gate_named", "gate_names", "gates", "register", "unregister"]
