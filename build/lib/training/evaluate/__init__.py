"""Evaluating a trained encoder: cell embeddings (``embed``), the linear probe (``probe``), the frequency
baseline of masked gene modelling (``baseline``) and a run's report (``report``)."""

__all__: list[str] = []
