"""Inspecting networks: :func:`summary` (shapes, parameters, MACs, with the course's formulas)."""

from cnnkit.inspect.summary import Row, Summary, summary

__all__ = ["Row", "Summary", "summary"]
