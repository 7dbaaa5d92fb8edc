"""Strategy, precision and node-count resolution for the Trainer.

``ddp``, ``fsdp``, ``deepspeed_stage_{1,2,3}`` or a DeepSpeed JSON config file. On CUDA the stock
Lightning strategies are used. Lightning's ``DeepSpeedStrategy`` refuses a CPU accelerator, yet
DeepSpeed itself trains on CPU over gloo: ``CPUDeepSpeedStrategy`` lifts only that check, so every ZeRO
stage runs in the tests here. FSDP is refused on CPU by Lightning; it is configured and validated
here and runs on GPUs only.

``trainer.num_nodes`` comes from the launcher (torchrun: WORLD_SIZE / LOCAL_WORLD_SIZE; SLURM:
SLURM_NNODES) unless set explicitly; an explicit value that disagrees is an error, as is a device
count that disagrees with the processes torchrun started per node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

from ..errors import ConfigError

__all__ = [
    "PRECISIONS",
    "STRATEGIES",
    "CPUDeepSpeedStrategy",
    "launcher_topology",
    "resolve_trainer_options",
    "restart_hazard",
]

STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "fsdp",
    "deepspeed",
    "deepspeed_stage_1",
    "deepspeed_stage_2",
    "deepspeed_stage_3",
    "single_device",
)
PRECISIONS = ("32", "32-true", "64", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "transformer-engine")


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """DeepSpeed ZeRO on CPU processes over gloo (tests and CPU-only debugging; use GPUs for speed)."""

    strategy_name = "deepspeed_cpu"

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # skip DeepSpeedStrategy's CUDA-only check

    def setup_distributed(self) -> None:
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self) -> torch.device:
        # an index, because DeepSpeed reads ``device_rank`` from it; on CPU every rank's is 0
        return torch.device("cpu", 0)


def launcher_topology(env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """(nodes, processes per node) from torchrun or SLURM variables, or None outside a launcher."""
    env = os.environ if env is None else env
    if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:
        world, local = int(env["WORLD_SIZE"]), int(env["LOCAL_WORLD_SIZE"])
        if world % local:
            raise ConfigError(
                f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local}: uneven nodes "
                "are not supported; start the same --nproc-per-node on every node"
            )
        return world // local, local
    if (
        "SLURM_NNODES" in env
        and "SLURM_NTASKS_PER_NODE" in env
        and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    ):
        return int(env["SLURM_NNODES"]), int(env["SLURM_NTASKS_PER_NODE"].split("(")[0])
    return None


def restart_hazard(env: dict[str, str] | None = None) -> str | None:
    """Why a torchrun job with restarts may not survive one, or None.

    torchrun's c10d rendezvous shares one TCPStore between its agent and the workers and keeps it across
    restarts, while the default process group writes its keys (each rank's address) with no per-attempt
    prefix: restarted ranks can read the dead attempt's addresses and fail ("Connection refused") or
    hang in ``init_process_group``. Measured here (torch 2.13, gloo): 2 of 3 restarts failed, 0 of 3
    with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, which gives every rendezvous round a fresh store
    (pytorch/pytorch#167288 reports the same with NCCL). The variable is read by torchrun's agent, so
    the worker can only say so.
    """
    env = os.environ if env is None else env
    if int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0 and env.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return (
            "torchrun --max-restarts is set but its rendezvous store is shared across restarts: a restarted "
            "job can fail or hang in init_process_group (pytorch/pytorch#167288); launch torchrun with "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment"
        )
    return None


def _ds_stage(name: str) -> int | None:
    if name == "deepspeed":
        return 2
    if name.startswith("deepspeed_stage_"):
        return int(name.rsplit("_", 1)[1].split("_")[0])
    return None


def resolve_trainer_options(
    trainer: dict[str, Any],
    deepspeed_config: str | None = None,
    env: dict[str, str] | None = None,
    batch_size: int = 1,
) -> dict[str, Any]:
    """Validate and complete the ``trainer.*`` options before the Trainer is built (pure: returns a new
    dict). Strategy names become strategy objects where the stock name would fail on this hardware."""
    out = dict(trainer)
    cuda = torch.cuda.is_available() and out.get("accelerator") in ("auto", "gpu", "cuda", None)
    strategy = out.get("strategy", "auto")
    precision = str(out.get("precision") or "32-true")
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r}: choose one of {PRECISIONS}")
    if not cuda and precision.startswith("16"):
        raise ConfigError(f"trainer.precision={precision!r} needs a CUDA GPU; on CPU use bf16-mixed or 32-true")
    topo = launcher_topology(env)
    if topo is not None:
        nodes, local = topo
        explicit = out.get("num_nodes", 1)
        if explicit not in (1, None) and explicit != nodes:
            raise ConfigError(
                f"trainer.num_nodes={explicit} but the launcher started {nodes} nodes; set "
                f"trainer.num_nodes={nodes} or drop it (it is taken from the environment)"
            )
        out["num_nodes"] = nodes
        devices = out.get("devices", "auto")
        if devices in ("auto", -1, "-1", None):
            out["devices"] = local
        elif int(devices) != local:
            raise ConfigError(
                f"trainer.devices={devices} but the launcher started {local} processes per node; "
                f"set trainer.devices={local} or auto"
            )
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ConfigError(f"trainer.strategy={strategy!r}: choose one of {STRATEGIES}, or set deepspeed_config")
        if strategy == "fsdp" and not cuda:
            raise ConfigError(
                "trainer.strategy=fsdp needs CUDA GPUs (Lightning refuses FSDP on CPU); on CPU use "
                "ddp or deepspeed_stage_3 (also shards parameters)"
            )
        stage = _ds_stage(strategy)
        if deepspeed_config is not None:
            path = Path(deepspeed_config)
            if not path.is_file():
                raise ConfigError(f"deepspeed_config={deepspeed_config!r}: no such file")
            cls = DeepSpeedStrategy if cuda else CPUDeepSpeedStrategy
            out["strategy"] = cls(config=str(path), logging_batch_size_per_gpu=batch_size)
        elif stage is not None:
            if precision.startswith("16") or precision == "64-true":
                raise ConfigError(f"trainer.precision={precision} with DeepSpeed: use bf16-mixed or 32-true")
            # the batch size is given: Lightning would otherwise build a train loader early to find it
            cls = DeepSpeedStrategy if cuda else CPUDeepSpeedStrategy
            out["strategy"] = cls(stage=stage, logging_batch_size_per_gpu=batch_size)
    return out
