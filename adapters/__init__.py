"""Adapters: how edgeready talks to a model where it runs. One protocol for all (see base.py).

The folder is installed as the package `edgeready.adapters`."""

from edgeready.adapters.base import Adapter, AdapterStats, AdapterWrapper

__all__ = ["Adapter", "AdapterStats", "AdapterWrapper"]
