"""Fitting: the LightningModule (``module``), the data module over the loader (``data``), callbacks,
strategies and node counts (``strategies``), the LightningCLI (``cli``) and the run history (``history``)."""

__all__: list[str] = []
