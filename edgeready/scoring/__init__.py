"""Scorers: turn responses into per-item scores."""
