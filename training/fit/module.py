"""``CellshardModule``: masked gene modelling as a ``LightningModule`` (config keys ``model.*``).

The loss is a loss-weighted mean over the masked tokens of the *global* batch: each rank sums its
weighted token losses and divides by the token weight summed over all ranks (one all-reduce per
step, which also gives the logged metrics), times the world size that DDP/DeepSpeed divide gradients
by. So a 2-rank step computes the same gradient as one process with both ranks' cells, and padded
repeats (weight 0) contribute nothing.

Resume: the loader state travels in the checkpoint (Lightning's fit loop); the module adds each rank's
RNG state (dropout) and the vocabulary's hash. Optional on resume: a new LR or weight decay, and a
longer or shorter context (position embeddings, and their Adam moments, extended or interpolated).

The ``model`` section is ``EncoderConfig`` (the architecture: this module forwards its keyword arguments
there, as the data module does with ``LoaderConfig``, so ``model.d_model`` and its help are declared
once), ``OptimizerConfig``, ``SchedulerConfig``, and the objective and resume keys below; checkpoints keep
these flat hyperparameters, so every checkpoint written before stays resumable.

Long because the LightningModule keeps the whole step together: the loss sums, the all-reduced logging,
the checkpoint hooks and the optimizer set-up."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F

from shards.loading.batch import CellBatch
from shards.loading.device import is_ragged

from ..errors import ConfigError
from ..model.encoder import CellEncoder, EncoderConfig, extend_positions
from ..model.optim import OptimizerConfig, SchedulerConfig, build_optimizer, build_scheduler, param_groups

__all__ = ["CellshardModule", "StepSums", "encoder_config", "load_gene_embeddings"]

log = logging.getLogger(__name__)


class StepSums:
    """A step's (or a validation pass's) sums, named: the loss-weighted token loss, the token weight, the
    weighted correct predictions, the weighted cell loss and the cell weight. One float64 tensor
    underneath, so that a multi-rank step all-reduces them in one collective."""

    FIELDS = ("token_loss", "token_weight", "correct", "cell_loss", "cell_weight")

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values

    @classmethod
    def of(cls, **parts: torch.Tensor) -> StepSums:
        return cls(torch.stack([parts[f] for f in cls.FIELDS]).double())

    @classmethod
    def zeros(cls, device: torch.device | str | None = None) -> StepSums:
        return cls(torch.zeros(len(cls.FIELDS), dtype=torch.float64, device=device))

    def __add__(self, other: StepSums) -> StepSums:
        return StepSums(self.values + other.values.to(self.values.device))

    def all_reduced(self) -> StepSums:
        """The sums over every rank (a copy: autograd never sees the collective)."""
        values = self.values.clone()
        dist.all_reduce(values)
        return StepSums(values)

    token_loss = property(lambda self: self.values[0])
    token_weight = property(lambda self: self.values[1])
    correct = property(lambda self: self.values[2])
    cell_loss = property(lambda self: self.values[3])
    cell_weight = property(lambda self: self.values[4])


class CellshardModule(pl.LightningModule):
    def __init__(
        self,
        optimizer: OptimizerConfig | None = None,
        scheduler: SchedulerConfig | None = None,
        cell_loss_weight: float = 0.0,
        gene_embeddings: str | None = None,
        freeze_gene_embeddings: bool = False,
        resume_lr: float | None = None,
        resume_weight_decay: float | None = None,
        position_mode: str = "interpolate",
        compile: bool = False,
        vocab_sha256: str | None = None,
        **encoder: Any,
    ) -> None:
        """
        Args:
            optimizer: ``model.optimizer.*`` (``OptimizerConfig``; null: its defaults).
            scheduler: ``model.scheduler.*`` (``SchedulerConfig``; null: its defaults).
            cell_loss_weight: weight of the cell objective beside masked gene modelling (0 = off): the
                mean-pooled cell embedding predicts the cell's genes through a head tied to the gene
                embedding (scGPT's MVC idea for rank-value inputs). It trains the embedding that
                ``training report`` probes; without it only the masked positions are trained.
            gene_embeddings: CSV ``gene_id,dim_0..dim_k`` to initialise gene embeddings (e.g. ESM2).
            freeze_gene_embeddings: keep those embeddings fixed.
            resume_lr: on resume, set this peak learning rate instead of the saved one.
            resume_weight_decay: on resume, set this weight decay.
            position_mode: ``interpolate`` or ``extend`` when the context length changes on resume.
            compile: ``torch.compile`` the encoder's trunk (embeddings and blocks; padded and packed batches;
                the heads stay eager, so a step has no graph break).
            vocab_sha256: the vocabulary's hash; linked from the shard set, checked on resume.
            **encoder: the architecture (``EncoderConfig``: ``d_model``, ``n_layers``, ...; ``vocab_size``,
                ``max_positions`` and ``value_bins`` linked from the data).
        """
        super().__init__()
        self.save_hyperparameters()
        if not encoder.get("vocab_size"):
            raise ConfigError("model.vocab_size is not set: it comes from the shard set (data.path)")
        if not (cell_loss_weight >= 0.0 and math.isfinite(cell_loss_weight)):
            raise ConfigError(f"model.cell_loss_weight={cell_loss_weight}: use a finite weight >= 0 (0 = off)")
        if position_mode not in ("interpolate", "extend"):
            raise ConfigError(f"model.position_mode={position_mode!r}: use interpolate or extend")
        self.optimizer_cfg = optimizer or OptimizerConfig()
        self.scheduler_cfg = scheduler or SchedulerConfig()
        self.optimizer_cfg.check()
        self.scheduler_cfg.check()
        self.cfg = encoder_config(cell_loss_weight > 0, **encoder)
        self.model = CellEncoder(self.cfg)
        self._val_sums = StepSums.zeros()
        self._rng_to_restore: Any = None
        self._resumed = False
        self.last_metrics: dict[str, Any] = {}
        self.last_val_step: int | None = None  # the step of the last validation while fitting

    # -- set-up ------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.model.compile_trunk()
            self._compiled = True

    def setup(self, stage: str) -> None:
        path = self.hparams.gene_embeddings
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.cfg.attention == "flex" and self._trainer is not None:
            config = getattr(dm, "config", None)
            if config is not None and not config.pack:
                log.warning("model.attention=flex acts on packed batches only: set data.pack true (else SDPA runs)")
            elif stage == "fit" and self.trainer.strategy.root_device.type != "cuda":
                raise ConfigError(
                    "model.attention=flex trains on CUDA only (FlexAttention has no backward on CPU): "
                    "use model.attention sdpa on this machine"
                )
        if path and dm is not None and not getattr(self, "_embeddings_loaded", False):
            load_gene_embeddings(self.model, path, dm.vocab)
            self._embeddings_loaded = True
        if self.hparams.freeze_gene_embeddings:
            self.model.genes.weight.requires_grad_(False)

    def configure_optimizers(self):
        opt = build_optimizer(self.model, self.optimizer_cfg)
        max_steps = self.trainer.max_steps if self._trainer is not None else None
        sched = build_scheduler(opt, self.scheduler_cfg, max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A ragged batch (``data.collate_on: device``) is padded and masked here, on the device it was
        moved to, by the data module's ``device_collator`` (bit-identical to the host collator)."""
        if not is_ragged(batch):
            return batch
        collate = getattr(self.trainer.datamodule, "device_collator", None) if self._trainer is not None else None
        if collate is None:
            raise ConfigError(
                "a ragged batch (data.collate_on=device) needs the trainer's CellDataModule to collate it; "
                "set data.collate_on=host when batches come from elsewhere"
            )
        return collate(batch)

    # -- steps -------------------------------------------------------------------------------------
    def _sums(self, batch: CellBatch) -> tuple[torch.Tensor, torch.Tensor, StepSums]:
        """(weighted token loss sum and weighted cell loss sum, with grad; the step's ``StepSums``)."""
        out = self.model(
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            batch.get("values"),
            batch.get("segments"),
            batch.get("positions"),
            batch["loss_weight"].shape[0],
        )
        logits, rows = out[0], out[1]
        labels = batch["labels"]
        target = labels[labels >= 0]
        w = batch["loss_weight"][rows].float()
        ce = F.cross_entropy(logits.float(), target, reduction="none")
        num = (ce * w).sum()
        correct = ((logits.argmax(-1) == target).float() * w).sum()
        if len(out) > 2:  # the cell objective: one term per cell, weighted like its tokens
            cw = batch["loss_weight"].float()
            cell, cell_w = (out[2] * cw).sum(), cw.sum()
        else:
            cell = cell_w = torch.zeros((), device=num.device)
        sums = StepSums.of(
            token_loss=num.detach(),
            token_weight=w.sum(),
            correct=correct.detach(),
            cell_loss=cell.detach(),
            cell_weight=cell_w,
        )
        return num, cell, sums

    def _world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def training_step(self, batch: CellBatch, batch_idx: int) -> torch.Tensor:
        num, cell, sums = self._sums(batch)
        world = self._world()
        if world > 1:  # the global token weight; also makes the logged figures global
            sums = sums.all_reduced()
        token_weight = sums.token_weight.clamp_min(1.0)
        loss = num * world / token_weight.to(num.dtype)
        # tensors, not Python floats: no host-device sync per step (Lightning reads them when it logs)
        mean = sums.token_loss / token_weight
        metrics = {
            "train/loss": mean,
            "train/perplexity": torch.exp(mean.clamp_max(50.0)),
            "train/masked_accuracy": sums.correct / token_weight,
        }
        weight = self.hparams.cell_loss_weight
        if weight > 0:
            cell_weight = sums.cell_weight.clamp_min(1.0)
            loss = loss + weight * cell * world / cell_weight.to(cell.dtype)
            metrics["train/cell_loss"] = sums.cell_loss / cell_weight
        self.log_dict(metrics, prog_bar=False, on_step=True, on_epoch=False, rank_zero_only=True)
        self.log("loss", mean, prog_bar=True, on_step=True, on_epoch=False, logger=False, rank_zero_only=True)
        self.last_metrics = metrics
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums = StepSums.zeros(self.device)

    def validation_step(self, batch: CellBatch, batch_idx: int) -> None:
        _, _, sums = self._sums(batch)
        self._val_sums = self._val_sums + sums

    def on_validation_epoch_end(self) -> None:
        if self._trainer is not None and not self.trainer.sanity_checking:
            self.last_val_step = self.trainer.global_step
        sums = self._val_sums.all_reduced() if self._world() > 1 else self._val_sums
        if sums.token_weight <= 0:
            return
        loss = (sums.token_loss / sums.token_weight).item()
        metrics = {
            "val/loss": loss,
            "val/perplexity": math.exp(min(loss, 50.0)),
            "val/masked_accuracy": (sums.correct / sums.token_weight).item(),
        }
        if sums.cell_weight > 0:
            metrics["val/cell_loss"] = (sums.cell_loss / sums.cell_weight).item()
        self.log_dict(metrics, prog_bar=True, sync_dist=False)  # already global on every rank
        self.last_metrics = {**self.last_metrics, **metrics}

    # -- checkpoints -------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        states = [state]
        if dist.is_available() and dist.is_initialized():  # every rank runs this hook; rank 0 writes the file
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        checkpoint["cellshard"] = {
            "rng": states,
            "vocab_sha256": self.hparams.vocab_sha256,
            "encoder": dataclasses.asdict(self.cfg),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("cellshard", {})
        saved, mine = extra.get("vocab_sha256"), self.hparams.vocab_sha256
        if saved and mine and saved != mine:
            raise ConfigError(
                "the shard set's vocabulary (data.path) differs from the checkpoint's: the token ids would "
                "not mean the same genes; build the set with `ingest build --vocab <checkpoint dir>/vocab.csv "
                "--gene-medians <checkpoint dir>/gene_medians.csv`, or start without ckpt_path"
            )
        self._rng_to_restore = extra.get("rng")
        self._resumed = True
        self._resize_positions(checkpoint)

    def _resize_positions(self, checkpoint: dict[str, Any]) -> None:
        key = "model.positions.weight"
        states = checkpoint.get("state_dict", {})
        if key not in states or states[key].shape[0] == self.cfg.max_positions:
            return
        old, new, mode = states[key].shape[0], self.cfg.max_positions, self.hparams.position_mode
        log.info("context length changes on resume: %d -> %d position embeddings (%s)", old, new, mode)
        states[key] = extend_positions(states[key], new, mode)
        index = [id(p) for g in param_groups(self.model, 0.0) for p in g["params"]].index(
            id(self.model.positions.weight)
        )
        for opt in checkpoint.get("optimizer_states", []):
            moments = opt.get("state", {}).get(index, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in moments:
                    moments[name] = extend_positions(moments[name], new, "extend")

    def on_train_start(self) -> None:
        if self._rng_to_restore:
            rank = self.trainer.global_rank
            if len(self._rng_to_restore) == self._world():
                torch.set_rng_state(self._rng_to_restore[rank]["cpu"])
                if "cuda" in self._rng_to_restore[rank] and torch.cuda.is_available():
                    torch.cuda.set_rng_state(self._rng_to_restore[rank]["cuda"])
            else:
                log.warning("world size changed since the checkpoint: RNG states (dropout) are not restored")
            self._rng_to_restore = None
        if self._resumed:
            self._apply_resume_overrides()

    def _apply_resume_overrides(self) -> None:
        lr, wd = self.hparams.resume_lr, self.hparams.resume_weight_decay
        if lr is None and wd is None:
            return
        for opt_cfg in self.trainer.lr_scheduler_configs:
            sched = opt_cfg.scheduler
            if lr is not None:
                sched.base_lrs = [lr for _ in sched.base_lrs]
        for opt in self.trainer.optimizers:
            for i, group in enumerate(opt.param_groups):
                if lr is not None:
                    factor = group["lr"] / group["initial_lr"] if group.get("initial_lr") else 1.0
                    group["initial_lr"], group["lr"] = lr, lr * factor
                if wd is not None and i == 0:  # group 0 is the decayed one (param_groups)
                    group["weight_decay"] = wd
        log.info("resume overrides applied: lr=%s weight_decay=%s", lr, wd)


def encoder_config(cell_head: bool, /, **keys: Any) -> EncoderConfig:
    """``EncoderConfig`` from ``model.*`` keys, or a ``ConfigError`` naming the key (and the closest one)."""
    fields = [f.name for f in dataclasses.fields(EncoderConfig)]
    if "cell_head" in keys:
        raise ConfigError("model.cell_head follows model.cell_loss_weight (> 0 adds the head): set that instead")
    for key in keys:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f": did you mean model.{close[0]}?" if close else f"; the model's keys: {', '.join(fields)}"
            raise ConfigError(f"model.{key} is not an option of the model{hint}")
    try:
        return EncoderConfig(**keys, cell_head=cell_head)
    except ValueError as exc:
        raise ConfigError(f"model.{exc}") from None


def load_gene_embeddings(model: CellEncoder, path: str | Path, vocab) -> int:
    """Copy rows of a ``gene_id,dim_0..dim_k`` CSV into the gene embedding, matched by gene id through
    ``vocab.csv``; a width other than d_model is an error. Returns the number of genes initialised."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.gene_embeddings={str(path)!r}: cannot read it ({exc})") from None
    if "gene_id" not in table.columns:
        raise ConfigError(f"model.gene_embeddings={str(path)!r}: needs a gene_id column, then dim_0..dim_k")
    values = table.drop(columns=["gene_id"]).to_numpy(dtype="float32")
    if values.shape[1] != model.cfg.d_model:
        raise ConfigError(
            f"model.gene_embeddings={str(path)!r}: {values.shape[1]} dimensions, model.d_model is "
            f"{model.cfg.d_model}; set model.d_model={values.shape[1]} or project the embeddings"
        )
    token_of = vocab.token_of()
    pairs = [(token_of[g], i) for i, g in enumerate(table["gene_id"].astype(str)) if g in token_of]
    if not pairs:
        raise ConfigError(f"model.gene_embeddings={str(path)!r}: no gene id matches the vocabulary (Ensembl ids?)")
    rows, src = zip(*pairs, strict=True)
    with torch.no_grad():
        model.genes.weight[list(rows)] = torch.from_numpy(values[list(src)])
    log.info("initialised %d of %d gene embeddings from %s", len(pairs), len(token_of), path)
    return len(pairs)
