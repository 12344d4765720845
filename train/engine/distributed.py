"""Processes and devices: torchrun's environment, the process group (NCCL on GPUs, gloo on CPUs),
DDP wrapping, channels-last convolutions, the autocast dtype, and barriers.

A stage starts the process group once, before it builds its data (`with distributed(device) as
info:`), so that data preparation can synchronise ranks with `barrier`; the `Trainer` reuses
that group. With one process there is no group and `barrier` does nothing.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lafs_edge.errors import UserError


@dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # init_distributed started the process group (its caller ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA GPU is visible to this process")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            dist.init_process_group("nccl", device_id=target)
        else:
            dist.init_process_group("gloo")
        owns = True
    return DistInfo(rank, world, local_rank, target, owns)


@contextlib.contextmanager
def distributed(device: str = "auto") -> Iterator[DistInfo]:
    """`init_distributed` for the span of the block: a group it started ends with the block (one
    started by an enclosing block, or by the caller, is left alone)."""
    info = init_distributed(device)
    try:
        yield info
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """DDP when there are several ranks. BatchNorm statistics stay per rank (as in arcface_torch):
    buffers are not broadcast every step. Convolutions go channels-last first (before DDP
    builds its gradient buckets, whose strides must match the parameters')."""
    use_channels_last(module)
    if info.world == 1:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    # torch >= 2.13 renamed the option (and still syncs buffers once at init, which is fine)
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync: dict[str, Any] = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else \
        {"broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=ids, **no_sync)


def use_channels_last(module: nn.Module) -> None:
    """Convolution weights in channels-last layout: oneDNN's (CPU) and cuDNN's fast path for
    every CNN here (MobileFaceNet, the landmark CNN's MobileNetV3); `benchmarks/train_speed.py`
    measures the step with and without it. Inputs stay NCHW: a channels-last weight makes the
    convolution pick the layout, with identical results up to float rounding."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stub lacks memory_format


def compile_trained(modules: dict[str, nn.Module]) -> None:
    """`torch.compile` each module that has trainable parameters, in place (`Module.compile`:
    its state dict keeps its keys, so checkpoints and exports are unchanged). Frozen modules
    (an EMA average, a teacher) are left eager: they run outside the training step."""
    for module in modules.values():
        if any(p.requires_grad for p in module.parameters()):
            module.compile()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision=fp16 needs a GPU (use fp32 or bf16 on a CPU)")
    return table[precision]


def barrier(info: DistInfo, timeout_s: float | None = None) -> None:
    """Wait for every rank; nothing to wait for with one process.

    `timeout_s`: for a wait longer than the process group's own timeout (minutes), such as ranks
    waiting while rank 0 prepares data: the wait goes through a gloo group of its own with that
    timeout (a CPU barrier, also when training runs on NCCL)."""
    if info.world == 1:
        return
    if timeout_s is None:
        dist.barrier()
        return
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    try:
        dist.barrier(group=group)
    finally:
        dist.destroy_process_group(group)
