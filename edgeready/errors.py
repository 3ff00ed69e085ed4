"""One exception root for everything edgeready raises on purpose, so a caller can tell a judged problem
(bad input, a measurement that could not be made) from a bug.

How the run maps them (edgeready/plugin.py): a `ConfigError` stops the run before any model loads (pytest
exit 4); any other `EdgereadyError` during a measurement makes that gate an `error` (exit 1, never a pass);
any other exception is an error too, reported as an internal one with its type.
"""

from __future__ import annotations


class EdgereadyError(Exception):
    """Root of every error edgeready raises on purpose. The message is for humans and names the file, key,
    URL or item concerned."""


class ConfigError(EdgereadyError, ValueError):
    """A candidate manifest, target YAML or option that cannot be used."""


class DatasetError(EdgereadyError, ValueError):
    """A dataset file that cannot be read as expected. The message names the file and the key or item."""


class MeasurementError(EdgereadyError, RuntimeError):
    """A measurement could not be made: the gate is an error, never a pass."""


class ScorerUnavailable(MeasurementError):
    """A sentence scorer cannot run here: a package is missing or its model is not on disk.

    The message always says what to install or where to put the model; a gate that meets this error
    must report an error, never fall back to another scorer (their scores are not comparable)."""


class EnergyUnavailable(MeasurementError):
    """No energy meter can deliver what was asked. `tried` maps each meter name to why it is unavailable."""

    def __init__(self, message: str, tried: dict[str, str] | None = None):
        super().__init__(message)
        self.tried = dict(tried or {})


class ServerError(EdgereadyError, RuntimeError):
    """A model server that could not be started or did not answer usefully."""


class ServerStartError(ServerError):
    """The server exited or did not answer in time; the message ends with its log tail."""


class PhoneError(ServerError):
    """A step on a phone over adb failed (connect, push, start, forward, read, stop). The message names the
    device (serial and name) and the step."""


class CacheError(EdgereadyError, RuntimeError):
    """The generation store cannot be used. The message names the file and what to do."""
