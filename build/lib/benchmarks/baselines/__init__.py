"""Faithful re-implementations of the algorithms users would otherwise run, for side-by-side timing."""

__all__: list[str] = []
