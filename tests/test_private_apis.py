"""Where cellshard relies on a dependency's private members, the dependency's range is pinned in
``pyproject.toml`` and this file fails when an upgrade breaks the use, naming it:

- torchdata (``<0.12``): ``CellDataLoader.shutdown_workers`` stops persistent workers through the
  StatefulDataLoader's iterator (``_iterator``, ``_shutdown_workers``, ``_workers``): torch's loaders
  have no public way to stop them before the iterator is collected;
- numba (``<0.69``): ``shards.jit`` installs a locked cache (a ``FunctionCache`` subclass, set as the
  dispatcher's ``_cache``) against numba's concurrent-cache corruption (numba #4807, #10128);
- cellxgene-census (``<1.19``): ``ingest.sources.census`` points ``_release_directory`` at a mirror's
  release directory (environment variables), which the package exposes no other way;
- lightning (``<2.7``): ``SamplerEpoch.on_save_checkpoint`` reads and corrects the fit loop's progress in
  the checkpoint (``loops.fit_loop``); the exact-resume and preemption tests fail if its layout changes,
  and this file checks the keys it reads.
"""

from __future__ import annotations

import pytest
import tomllib

from tests.conftest import ROOT


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {d.split(">")[0].split("<")[0].split("=")[0].strip(): d for d in deps}


@pytest.mark.parametrize("name", ["torchdata", "numba", "cellxgene-census", "lightning"])
def test_dependencies_used_privately_have_an_upper_bound(name):
    assert "<" in _pins()[name], f"{name} is used through private members: pin its range in pyproject.toml"


def test_torchdata_iterator_members_that_shutdown_workers_uses(zarr_set):
    from shards import CellDataLoader, ShardedCellDataset

    ds = ShardedCellDataset(str(zarr_set), batch_size=8, context_length=32)
    loader = CellDataLoader(ds, num_workers=1, persistent_workers=True)
    next(iter(loader))
    it = loader._iterator
    assert callable(it._shutdown_workers) and len(it._workers) == 1
    worker = it._workers[0]
    loader.shutdown_workers()
    worker.join(timeout=10)
    assert not worker.is_alive() and loader._iterator is None


def test_numba_cache_members_that_the_locked_cache_uses():
    from numba.core.caching import FunctionCache

    from shards.jit import LockedFunctionCache, kernel

    @kernel
    def add(a, b):
        return a + b

    assert add(1, 2) == 3
    assert isinstance(add._cache, LockedFunctionCache) and issubclass(LockedFunctionCache, FunctionCache)
    assert add._cache._impl.filename_base and add._cache._cache_path
    assert callable(add._cache._impl.locator.ensure_cache_path)


def test_census_release_directory_members():
    from cellxgene_census import _release_directory as release_dir

    assert isinstance(release_dir.CELL_CENSUS_RELEASE_DIRECTORY_URL, str)
    assert isinstance(release_dir.CELL_CENSUS_MIRRORS_DIRECTORY_URL, str)
    assert callable(release_dir.get_census_version_directory)


def test_lightning_loop_progress_keys_that_sampler_epoch_reads(tmp_path):
    import lightning.pytorch as pl
    import torch

    class M(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def training_step(self, batch, i):
            return self.w(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    seen = {}

    class Grab(pl.Callback):
        def on_save_checkpoint(self, trainer, module, checkpoint):
            seen.update(checkpoint["loops"]["fit_loop"])

    trainer = pl.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Grab()],
    )
    trainer.fit(M(), torch.utils.data.DataLoader(torch.randn(8, 2), batch_size=2))
    trainer.save_checkpoint(tmp_path / "c.ckpt")  # calls Grab.on_save_checkpoint with the checkpoint dict
    batch, epochs = seen["epoch_loop.batch_progress"], seen["epoch_progress"]
    assert {"total", "current", "is_last_batch"} <= set(batch) and {"started", "processed", "completed"} <= set(
        batch["current"]
    )
    assert {"total", "current"} <= set(epochs) and "state_dict" in seen
    assert trainer.fit_loop.epoch_loop.batch_progress.current.processed == 2
