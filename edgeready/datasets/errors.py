"""The one error every dataset loader raises for input it cannot use."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file that cannot be read as expected. The message names the file and the key or item."""
