"""cellshard's benchmark suite: one script per concern, JSON out, a dated report."""

__all__: list[str] = []
