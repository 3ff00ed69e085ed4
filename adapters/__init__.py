"""Adapters: how edgeready talks to a model where it runs. One protocol for all (see base.py)."""

from adapters.base import Adapter

__all__ = ["Adapter"]
