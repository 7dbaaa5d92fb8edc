"""``python -m training fit|validate ...``: LightningCLI over ``CellshardModule`` and ``CellDataModule``.

Config keys: ``data.*`` (the DataModule), ``model.*`` (the module; ``model.optimizer`` and
``model.scheduler`` are our factories), ``trainer.*`` (Lightning's), ``checkpoint.*`` (the
``ModelCheckpoint`` of last + best ``val/loss``), ``throughput.*``, and top-level ``deepspeed_config``,
``async_checkpoint``, ``every_n_steps``, ``validate_first``. The vocabulary size and hash, the
context length and the value bins flow from ``data`` into ``model`` (linked, never set twice).

At start the resolved config, the environment (python, torch, lightning, CUDA, GPUs, world size,
nodes) and the shard set's ``vocab.csv`` and ``gene_medians.csv`` are written beside the checkpoints;
after ``fit`` the training history is written as ``history.csv``.

Long because LightningCLI's subclass carries every hook a run needs at its edge (config names, links,
checkpoint resolution, resume checks, teardown), each a short method."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

import jsonargparse
import lightning
import lightning.pytorch as pl
import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from shards.commands import mistyped_key
from shards.errors import CellshardError
from shards.storage.atomic import write_bytes_atomic
from shards.storage.remote import is_secret_key, redact

from ..errors import ConfigError, first_line
from .callbacks import GradNormMonitor, SamplerEpoch, ThroughputMonitor
from .checkpoint_io import AtomicCheckpointIO
from .data import CREDENTIAL_KEYS, CellDataModule
from .history import write_history
from .module import CellshardModule
from .preemption import REQUEUE_EXIT, Preemption
from .progress import StepProgressBar
from .quiet import quiet_known_noise
from .strategies import resolve_trainer_options, restart_hazard
from .summary import fit_summary, model_line

__all__ = ["CellshardCLI", "environment_info", "main"]

log = logging.getLogger("training")

# each dataclass attribute's docstring is its --help (LoaderConfig, Stream, Weighting, PanelSpec)
jsonargparse.set_parsing_settings(docstring_parse_attribute_docstrings=True)


def redact_config(value: Any) -> Any:
    """A config value (jsonargparse Namespaces, dicts, lists) with credentials redacted, keeping its types:
    URLs without ``user:password@``, values under secret-named keys as ``***``."""
    if isinstance(value, Namespace):
        return Namespace(**redact_config(vars(value)))
    if isinstance(value, dict):
        return {k: "***" if is_secret_key(k) and v not in (None, "") else redact_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_config(v) for v in value)
    return redact(value) if isinstance(value, str) else value


def environment_info(trainer: pl.Trainer | None = None) -> dict[str, Any]:
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda": torch.version.cuda,
        "gpus": gpus,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }
    if trainer is not None:
        info |= {
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "devices_per_node": trainer.num_devices,
            "strategy": type(trainer.strategy).__name__,
            "precision": str(trainer.precision),
        }
    return info


class SaveRunFiles(SaveConfigCallback):
    """Beside the checkpoints: ``config.yaml`` (resolved), ``environment.json``, ``vocab.csv`` and
    ``gene_medians.csv`` — what it takes to tokenize new data for these checkpoints and rerun them."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pass  # at fit start instead: ModelCheckpoint would warn about a non-empty directory at setup

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # no credentials on disk (here and in the logger's copy): data URLs and storage options redacted
        self.config = self.config.clone()
        for key in CREDENTIAL_KEYS:
            self.config.data[key] = redact_config(self.config.data.get(key))
        super().setup(trainer, pl_module, "fit")

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.dirpath), None)
        where = Path(ckpt.dirpath) if ckpt is not None else Path(trainer.default_root_dir) / "checkpoints"
        where.mkdir(parents=True, exist_ok=True)
        env = environment_info(trainer)
        log.info("environment: %s", json.dumps(env))
        self.parser.save(self.config, str(where / "config.yaml"), skip_none=False, overwrite=True)
        write_bytes_atomic(where / "environment.json", (json.dumps(env, indent=1) + "\n").encode())
        dm = trainer.datamodule
        if isinstance(dm, CellDataModule):
            for name, data in dm.side_files().items():
                write_bytes_atomic(where / name, data)


class CellshardCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            CellshardModule,
            CellDataModule,
            save_config_callback=SaveRunFiles,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [SamplerEpoch(), GradNormMonitor()], "use_distributed_sampler": False},
            seed_everything_default=0,
            args=args,
            run=run,
            auto_configure_optimizers=False,
            parser_kwargs={"description": "cellshard training: pretrain on a shard set"},
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit and validate: Lightning's test and predict need a test split or a predict step that a
        pretraining run does not have (``embed`` is the prediction of this model)."""
        base = LightningCLI.subcommands()
        return {name: base[name] for name in ("fit", "validate")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # each subcommand's parser, in the order of ``subcommands()`` (LightningCLI builds them in that
        # order), kept to check a command line's keys before parsing (``parse_arguments``)
        self._command_parsers = [*getattr(self, "_command_parsers", []), parser]
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.vocab_sha256", "model.vocab_sha256", apply_on="instantiate")
        parser.link_arguments("data.context_length", "model.max_positions")
        parser.link_arguments("data.value_bins", "model.value_bins")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best-{step}",
                "checkpoint.auto_insert_metric_name": False,
                # one last.ckpt, refreshed by whichever callback saves (not last-v1.ckpt beside it): a
                # restarted job resumes with `--ckpt_path last` from the newest
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(ThroughputMonitor, "throughput")
        parser.add_argument(
            "--deepspeed_config",
            type=str | None,
            default=None,
            help="a DeepSpeed JSON config (then trainer.strategy is DeepSpeed with it)",
        )
        parser.add_argument(
            "--async_checkpoint",
            type=bool,
            default=False,
            help="write checkpoints in a background thread (Lightning's AsyncCheckpointIO)",
        )
        parser.add_argument(
            "--every_n_steps",
            type=int | None,
            default=None,
            help="also keep a checkpoint every N optimizer steps (and refresh last.ckpt then)",
        )
        parser.add_argument(
            "--validate_first",
            type=bool,
            default=False,
            help="with ckpt_path: run a validation pass before resuming training",
        )

    #: model keys a resume may change; the rest of ``model.*`` comes from the checkpoint's hyperparameters
    RESUME_KEYS = ("resume_lr", "resume_weight_decay", "position_mode", "compile", "freeze_gene_embeddings")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """After parsing: refuse a ``ckpt_path`` that is not there or not a checkpoint, in one line and
        before anything is built or written, and remember the ``model.*`` keys this run may change on
        resume (LightningCLI then replaces ``model.*`` with the checkpoint's hyperparameters, so that
        the architecture matches the weights; ``before_instantiate_classes`` puts them back). Before
        parsing: a mistyped key is one line naming the closest option (exit 2), not a page of usage."""
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        parsers = dict(zip(self.subcommands(), getattr(self, "_command_parsers", []), strict=False))
        command = parsers.get(argv[0]) if argv else None
        if command is not None:
            known = ["config", "print_config", "help", *command.get_defaults().keys()]
            typo = mistyped_key(argv[1:], known, f"python -m training {argv[0]}")
            if typo:
                print(f"python -m training {argv[0]}: error: {typo}", file=sys.stderr)
                raise SystemExit(2)
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        self._resume_keep = {k: self.config[sub].model.get(k) for k in self.RESUME_KEYS} if sub else {}
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt or ckpt in ("last", "best", "hpc") or "://" in str(ckpt):
            return
        if not Path(ckpt).exists():
            raise ConfigError(
                f"ckpt_path={ckpt}: no such file; give a checkpoint from `fit`, or `last` to resume the "
                "newest one of trainer.default_root_dir (none yet: start fresh)"
            )
        if Path(ckpt).is_file():
            try:  # weights only: a checkpoint from elsewhere cannot run code; mmap: nothing is read whole
                torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # torch.load raises several kinds for damaged or unsafe files
                raise ConfigError(f"ckpt_path={ckpt}: cannot read it as a checkpoint ({first_line(exc)})") from None

    def _sub(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        if self.subcommand:
            for key, value in getattr(self, "_resume_keep", {}).items():
                self.config[self.subcommand].model[key] = value
        hazard = restart_hazard()
        if hazard and os.environ.get("RANK", "0") == "0":
            log.warning("warning: %s", hazard)
        cfg = self._sub()
        root = Path(cfg.trainer.default_root_dir or os.getcwd())
        cfg.trainer.default_root_dir = str(root)
        if cfg.trainer.logger in (None, True):  # CSV by default (TensorBoard / W&B through trainer.logger)
            cfg.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir=str(root), name="logs")
            )
        if not cfg.checkpoint.dirpath:
            cfg.checkpoint.dirpath = str(root / "checkpoints")
        if cfg.data.val_split is None and cfg.checkpoint.monitor == "val/loss":
            cfg.checkpoint.monitor = None  # no validation: keep last only
            cfg.checkpoint.save_top_k = 1
        if cfg.data.val_split is None:
            cfg.trainer.limit_val_batches = 0  # no validation loop at all (not an empty one)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """The Trainer of the config, its options resolved (strategies, node counts), with the run's own
        callbacks and plugins, built by LightningCLI (which adds ``checkpoint``, ``throughput`` and
        the run files' callback)."""
        cfg = self._sub()
        init = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = {**(init.get("trainer") or {}), **kwargs}
        trainer_config = resolve_trainer_options(
            trainer_config, cfg.get("deepspeed_config"), batch_size=cfg.data.batch_size
        )
        extra = []
        if cfg.get("every_n_steps"):
            extra.append(
                ModelCheckpoint(
                    dirpath=cfg.checkpoint.dirpath,
                    filename="step-{step}",
                    every_n_train_steps=int(cfg.every_n_steps),
                    save_top_k=-1,
                    save_last=True,  # last.ckpt follows too: `--ckpt_path last` restarts from the newest step
                    enable_version_counter=False,
                    auto_insert_metric_name=False,
                )
            )
        if trainer_config.get("logger") not in (False, None):
            extra.append(LearningRateMonitor(logging_interval="step"))
        extra.append(Preemption())
        if trainer_config.get("enable_progress_bar", True) is not False:
            extra.append(StepProgressBar())
        deepspeed = "DeepSpeed" in type(trainer_config.get("strategy")).__name__
        if cfg.get("async_checkpoint") and deepspeed:
            raise ConfigError("async_checkpoint does not apply to DeepSpeed (it writes its own checkpoints)")
        if not deepspeed:  # DeepSpeed writes its own checkpoint directories
            io = AtomicCheckpointIO()
            plugins = trainer_config.get("plugins") or []
            plugins = [*(plugins if isinstance(plugins, list) else [plugins])]
            trainer_config["plugins"] = [*plugins, AsyncCheckpointIO(io) if cfg.get("async_checkpoint") else io]
        if trainer_config.get("enable_model_summary") is None:
            trainer_config["enable_model_summary"] = False  # before_fit logs the model's line instead
        callbacks = trainer_config.get("callbacks") or []
        trainer_config["callbacks"] = [*(callbacks if isinstance(callbacks, list) else [callbacks]), *extra]
        return super().instantiate_trainer(**trainer_config)

    def before_fit(self) -> None:
        """The model in one line (Lightning's own summary is off: its "Total Flops" is 0 without an
        example input), then a validation first when ``validate_first`` asks for one."""
        cfg = self._sub()
        if self.trainer.is_global_zero:
            log.info("%s", model_line(self.model, self.datamodule))
        if cfg.get("validate_first") and cfg.get("ckpt_path"):
            self.trainer.validate(self.model, datamodule=self.datamodule, ckpt_path=cfg.ckpt_path)

    def after_fit(self) -> None:
        """A validation at the last step when the run ended between two (every rank), then the history
        and the three-line summary (``summary``; rank 0). A run stopped by a signal ends as it was: it
        continues with ``--ckpt_path last``."""
        trainer, module = self.trainer, self.model
        stopped = any(isinstance(c, Preemption) and c.stopped_at is not None for c in trainer.callbacks)
        validates = self.datamodule.val_split is not None and trainer.limit_val_batches != 0
        if validates and not stopped and module.last_val_step != trainer.global_step:
            trainer.validate(module, datamodule=self.datamodule, verbose=False)
        if trainer.is_global_zero:
            path = write_history(trainer)
            if path is not None:
                log.info("training history: %s", path)
            if not stopped:
                for line in fit_summary(trainer, module, self.datamodule):
                    log.info("%s", line)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream of the first call:
    ``main`` may run many times in one process (tests, notebooks), each with its own stderr."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _follow_stderr() -> None:
    """Lightning gives its loggers a handler of its own, bound to the ``sys.stderr`` of the moment it was
    imported; swap those for handlers that follow ``sys.stderr`` (same level and format)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        for i, handler in enumerate(logger.handlers):
            if type(handler) is logging.StreamHandler:
                follow = _StderrHandler()
                follow.setLevel(handler.level)
                follow.setFormatter(handler.formatter)
                logger.handlers[i] = follow


#: the training recipes shipped with the package (``configs/train`` in the repository links here)
PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def resolve_config_names(argv: list[str]) -> list[str]:
    """``--config NAME`` (no such file, a bare name such as ``tiny`` or ``tiny.yaml``) means the packaged
    recipe of that name, so that configs resolve from any directory; paths are left as they are."""
    out = list(argv)
    for i, arg in enumerate(out):
        value, prefix = None, ""
        if arg.startswith("--config="):
            value, prefix = arg.split("=", 1)[1], "--config="
        elif i > 0 and out[i - 1] == "--config":
            value = arg
        if value is None or Path(value).exists() or "/" in value or os.sep in value:
            continue
        packaged = PACKAGED_CONFIGS / f"{value.removesuffix('.yaml')}.yaml"
        if not packaged.is_file():
            names = ", ".join(sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml")))
            raise ConfigError(f"--config {value}: no such file, nor a packaged recipe (packaged: {names})")
        out[i] = prefix + str(packaged)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: the command line)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_StderrHandler()])
    _follow_stderr()
    quiet_known_noise()
    cli = None
    try:
        if argv is None:  # LightningCLI reads the command line itself (and warns when also given args)
            sys.argv[1:] = resolve_config_names(sys.argv[1:])
        cli = CellshardCLI(args=None if argv is None else resolve_config_names(argv))
    except CellshardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SIGTERMException:
        # SIGTERM before the first training step (while Lightning's own handler is the one installed: set-up,
        # the sanity check): nothing was trained, so no checkpoint is written and the previous one stands
        print(
            "SIGTERM before the first training step: stopped without a new checkpoint; run again with "
            f"--ckpt_path last to continue (exit {REQUEUE_EXIT})",
            file=sys.stderr,
        )
        return REQUEUE_EXIT
    finally:
        teardown(cli)
    callbacks = getattr(getattr(cli, "trainer", None), "callbacks", [])
    for c in callbacks:
        if isinstance(c, Preemption) and c.stopped_at is not None:
            return c.exit_status  # stopped by a signal: the checkpoint is written, run again with --ckpt_path last
    return 0


def teardown(cli: CellshardCLI | None) -> None:
    """End a run in dependency order, before the interpreter's own exit: the loaders' worker processes
    first (their persistent iterators hold shared-memory slots and pipes), then the process group.

    Left to interpreter exit, the gloo process group was destroyed by its C++ destructor during module
    teardown, while loader threads and workers still held references: "terminate called without an
    active exception" aborted a rank after all work was done in ~5-10% of 2-rank runs.
    ``benchmarks/soak_teardown.py`` runs 50 consecutive 2-rank jobs to check it."""
    dm = getattr(cli, "datamodule", None)
    if isinstance(dm, CellDataModule):
        dm.shutdown_loaders()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
