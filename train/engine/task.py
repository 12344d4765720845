"""What a stage provides: a `Task` (its modules, parameter groups and loss) the `Trainer` runs."""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lafs_edge.train.engine.distributed import DistInfo


class Task(abc.ABC):
    """A training stage. `setup` builds modules on `info.device` (wrapping with `wrap_ddp` what
    every rank replicates); the Trainer seeds torch identically on every rank before it."""

    @abc.abstractmethod
    def setup(self, info: DistInfo) -> None: ...

    @abc.abstractmethod
    def state_modules(self) -> dict[str, nn.Module]:
        """Unwrapped modules whose state goes into checkpoints."""

    @abc.abstractmethod
    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups; a group may set `weight_decay` and `lr_scale` (x the scheduled lr)."""

    @abc.abstractmethod
    def loss(self, batch: Any, step: int, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean loss of one micro-batch (called under autocast) and optional float metrics."""

    @abc.abstractmethod
    def batch_images(self, batch: Any) -> int:
        """Images in one micro-batch (for images/s)."""

    def export(self, path: Path, **extra: Any) -> None:
        """Rank 0 writes the deployable checkpoint (`load_model` format) at each checkpoint."""

    def ddp_modules(self) -> list[DistributedDataParallel]:
        """DDP-wrapped modules: gradient sync is skipped on all but the last micro-batch."""
        return []

    def sharded_parameters(self) -> list[nn.Parameter]:
        """Parameters that differ per rank (Partial FC centres): their gradient norm is summed
        across ranks for clipping."""
        return []

    def before_step(self, step: int, total_steps: int, optimizer: torch.optim.Optimizer) -> None:
        """Per-step schedules beyond the lr (weight decay, EMA momentum...)."""

    def after_step(self, step: int, total_steps: int) -> None:
        """After the optimizer step (EMA teacher update, last-layer freeze...)."""
