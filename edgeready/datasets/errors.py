"""The one error every dataset loader raises for input it cannot use."""

from __future__ import annotations

from edgeready.errors import DatasetError

__all__ = ["DatasetError"]
