"""cellshard's training stage (issue "Training": not built yet)."""

__all__: list[str] = []
