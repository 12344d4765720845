"""The training engine every stage (supervised, pretrain, finetune, distill) runs on.

A stage supplies a `Task` (its modules, parameter groups and loss); `Trainer(cfg, task,
dataset).fit()` does the rest, the same way on a CPU, one GPU, or many GPUs and nodes under
`torchrun` (DDP over NCCL on GPUs, gloo on CPUs):

- data order: `GlobalBatchSampler` splits each global batch (micro_batch x accumulate x world)
  into fixed per-rank slots, so a run sees the same global batches on any number of ranks, and
  resumes at the exact step. `SeededDataset` seeds each sample's augmentation from
  (seed, epoch, index): independent of ranks, workers and restarts. A `SeededDataset` over
  WebDataset shards (`data.webdataset.ShardSource`) streams instead (`ShardStream`): shards
  split over ranks and workers, equal batch counts per rank, exact resume; its order depends on
  the number of ranks and workers.
- bf16/fp16 autocast on GPU (GradScaler for fp16), gradient accumulation (DDP `no_sync` on all
  but the last micro-batch), AdamW with linear warmup + cosine decay, global gradient-norm clip
  (shards of Partial FC included).
- checkpoints every K steps and on exit (normal end, `train.stop_after`, SIGINT/SIGTERM):
  `checkpoints/step_XXXXXXXX/rankNNNNN.pt` (model, optimizer, scaler, schedule step, sampler
  position, python/numpy/torch/cuda RNG), then `checkpoints/latest` names it; every file is
  written atomically and loads with `torch.load(weights_only=True)`. Rank 0 also writes the
  deployable `model.pt` (`lafs_edge.models.load_model` reads it).
- a NaN/inf loss (or gradient norm) on any rank stops every rank before the optimizer step,
  so the last checkpoint stays the last good one, and raises `TrainingDiverged`.
- TensorBoard scalars and `metrics.jsonl` on rank 0, a tqdm bar with images/s.
"""
from __future__ import annotations

import abc
import contextlib
import inspect
import itertools
import json
import math
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import (DataLoader, Dataset, IterableDataset, Sampler, default_collate,
                              get_worker_info)

from ..errors import UserError
from ..fileio import write_text_atomic
from ..models.registry import atomic_torch_save
from .config import save_config
from .data.webdataset import ShardSource

STATE_FORMAT = "lafs-edge-train-state/1"


class TrainingDiverged(UserError):
    """The loss or gradient became NaN/inf; the last good checkpoint was kept."""


# --- processes and devices ---------------------------------------------------------------------

@dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # this Trainer initialised the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cuda", "cpu"):
        raise UserError(f"train.device must be auto, cuda or cpu, got {device!r}")
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
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else \
        {"broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=ids, **no_sync)


def use_channels_last(module: nn.Module) -> None:
    """Convolution weights in channels-last layout: oneDNN's (CPU) and cuDNN's fast path for
    every CNN here (MobileFaceNet, the landmark CNN's MobileNetV3); `benchmarks/train_speed.py`
    measures the step with and without it. Inputs stay NCHW: a channels-last weight makes the
    convolution pick the layout, with identical results up to float rounding."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise UserError(f"train.precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision=fp16 needs a GPU (use fp32 or bf16 on a CPU)")
    return table[precision]


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


# --- data order ---------------------------------------------------------------------------------

class GlobalBatchSampler(Sampler[list]):
    """Yields this rank's micro-batches as lists of (index, epoch) keys.

    Epoch e shuffles all indices with seed + e; global batch t is perm[t*G:(t+1)*G] with
    G = micro_batch * accumulate * world; micro-batch a of rank r is slot a*world + r of it. The
    incomplete last global batch of an epoch is dropped (every rank needs equal batches).
    """

    def __init__(self, size: int, micro_batch: int, accumulate: int, world: int, rank: int,
                 seed: int, shuffle: bool = True):
        self.size, self.micro_batch, self.accumulate = size, micro_batch, accumulate
        self.world, self.rank, self.seed, self.shuffle = world, rank, seed, shuffle
        self.global_batch = micro_batch * accumulate * world
        self.steps_per_epoch = size // self.global_batch
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulate

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # A tensor, sliced per micro-batch: a Python list of 42M indices per rank would not be.
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        for step in range(self.start_step, self.steps_per_epoch):
            for micro in range(self.accumulate):
                slot = micro * self.world + self.rank
                start = step * self.global_batch + slot * self.micro_batch
                yield [(i, self.epoch) for i in order[start:start + self.micro_batch].tolist()]


class SeededDataset(Dataset):
    """`transform(base[index], rng)` with rng seeded from (seed, epoch, index)."""

    def __init__(self, base: Dataset, transform: Callable[[Any, np.random.Generator], Any],
                 seed: int):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        return self.transform(self.base[index], rng)


class ShardStream(IterableDataset):
    """This rank's micro-batches from a `SeededDataset` over a `ShardSource`, collated inside
    the DataLoader workers: the streaming counterpart of `GlobalBatchSampler` (same
    `steps_per_epoch` and `set_epoch`).

    Epoch e shuffles the shards with (seed, e); rank r takes every world-th of them and each of
    its `lanes` (max(1, DataLoader workers)) every lanes-th of those, cycling them when they run
    short, through a shuffle buffer seeded by (seed, e, r, lane). Micro-batch i of the rank comes
    from lane i % lanes; sample n of a lane is transformed with a rng seeded by
    (seed, e, r, lane, n). The stream is a pure function of (seed, epoch, rank, world, lanes), and
    every rank yields exactly steps_per_epoch x accumulate micro-batches (steps from the sample
    count in meta.json), so DDP ranks stay in step. Resuming at step s skips this rank's first
    s x accumulate micro-batches: their samples are read, never decoded.
    """

    def __init__(self, data: SeededDataset, micro_batch: int, accumulate: int, world: int,
                 rank: int, workers: int, buffer: int, collate_fn: Callable | None = None):
        self.source: ShardSource = data.base
        self.transform, self.seed = data.transform, data.seed
        self.micro_batch, self.accumulate = micro_batch, accumulate
        self.world, self.rank, self.lanes, self.buffer = world, rank, max(1, workers), buffer
        self.collate = collate_fn or default_collate
        self.global_batch = micro_batch * accumulate * world
        self.steps_per_epoch = len(self.source) // self.global_batch
        if len(self.source.shards) < world * self.lanes:
            raise UserError(f"{len(self.source.shards)} shards cannot feed {world} ranks x "
                            f"{self.lanes} DataLoader workers: pack at least {world * self.lanes} "
                            "shards (data pack --shard-size) or lower data.num_workers")
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self) -> Iterator[Any]:
        skip = self.start_step * self.accumulate
        # A DataLoader iterator asks worker k for its outputs k, k + lanes, ...: here micro-batches
        # skip + k, skip + k + lanes, ..., which lane (skip + k) % lanes makes.
        worker = get_worker_info()
        lane = ((worker.id if worker else 0) + skip) % self.lanes
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.source.shards))
        shards = [self.source.shards[i] for i in order[self.rank::self.world][lane::self.lanes]]
        samples = self._cycle(shards, np.random.default_rng([self.seed, self.epoch, self.rank,
                                                             lane]))
        # this lane's samples: [done, end) of the epoch; those before `done` were used already
        done = len(range(lane, skip, self.lanes)) * self.micro_batch
        end = len(range(lane, self.steps_per_epoch * self.accumulate, self.lanes)) * \
            self.micro_batch
        batch = []
        for n, sample in zip(range(done, end), itertools.islice(samples, done, None)):
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, lane, n])
            batch.append(self.transform(self.source.decode(sample), rng))
            if len(batch) == self.micro_batch:
                yield self.collate(batch)
                batch = []

    def _cycle(self, shards: list[str], rng: np.random.Generator) -> Iterator[dict]:
        """Endless passes over `shards`, each shuffled through the buffer."""
        while True:
            empty = True
            for sample in _shuffled(self.source.read(shards), self.buffer, rng):
                empty = False
                yield sample
            if empty:
                raise UserError(f"no samples in the shards {', '.join(shards)}")


def _shuffled(samples: Iterable, size: int, rng: np.random.Generator) -> Iterator:
    """Shuffle a stream through a buffer of `size` items (<= 1: unchanged), emptied at its end."""
    buffer: list = []
    for sample in samples:
        if len(buffer) < max(1, size):
            buffer.append(sample)
            continue
        j = int(rng.integers(len(buffer)))
        yield buffer[j]
        buffer[j] = sample
    for j in rng.permutation(len(buffer)):
        yield buffer[j]


# Keys that only steer the run itself; changing them on resume is the normal thing to do.
_RUN_KEYS = {"train.resume", "train.stop_after", "train.progress", "train.log_every",
             "train.checkpoint_every", "train.keep_checkpoints", "data.num_workers"}


def config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """`key old -> new` for every leaf that differs between two resolved configs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += config_changes(old, new, f"{name}.")
        elif old != new and name not in _RUN_KEYS:
            out.append(f"{name} {old!r} -> {new!r}")
    return out


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers are the parallelism; more threads would oversubscribe


def _single_threaded_opencv() -> None:
    """Before forking DataLoader workers: OpenCV's thread pool is not fork-safe. A worker forked
    from a process whose pool has threads hangs in its first parallel cv2 call (or in
    cv2.setNumThreads), waiting for threads that do not exist in the child. One thread in the
    parent (whose images the workers decode anyway) is what the workers inherit."""
    import cv2

    cv2.setNumThreads(1)


# --- schedules, RNG -----------------------------------------------------------------------------

def cosine_schedule(step: int, total: int, warmup: int, peak: float, final: float) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine to `final` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a step may draw from, as tensors and plain values (weights_only-loadable)."""
    version, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "words": torch.tensor(words, dtype=torch.int64),
                        "gauss": gauss},
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["words"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- what a stage provides ----------------------------------------------------------------------

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

    def ddp_modules(self) -> list[nn.Module]:
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


# --- the engine ---------------------------------------------------------------------------------

@dataclass
class TrainResult:
    start_step: int
    final_step: int
    total_steps: int
    losses: list[float] = field(default_factory=list)  # one per step run, rank mean
    images_per_s: float = 0.0  # global batch throughput, first steps excluded
    seconds: float = 0.0
    output_dir: Path | None = None


class Trainer:
    def __init__(self, cfg: dict[str, Any], task: Task, dataset: Dataset,
                 collate_fn: Callable | None = None):
        self.cfg, self.task, self.dataset, self.collate_fn = cfg, task, dataset, collate_fn
        self.out = Path(cfg["output_dir"])
        self.ckpt_root = self.out / "checkpoints"
        self._stop_signal = False

    # -- setup --
    def fit(self) -> TrainResult:
        self.info = init_distributed(self.cfg["train"]["device"])
        try:
            return self._fit()
        finally:
            if self.info.owns_group and dist.is_initialized():
                dist.destroy_process_group()

    def _fit(self) -> TrainResult:
        cfg, info, optim = self.cfg, self.info, self.cfg["optim"]
        seed = int(cfg["seed"])
        self.amp_dtype = autocast_dtype(cfg["train"]["precision"], info.device)
        if info.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        seed_everything(seed)  # identical initial weights on every rank
        self.task.setup(info)
        seed_everything(seed + 1000 * info.rank)  # independent dropout / sampling per rank
        self.optimizer = self._optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.sampler, self.loader = self._loader()
        spe = self.sampler.steps_per_epoch
        self.total_steps = optim["max_steps"] or int(optim["epochs"] * spe)
        self.warmup_steps = min(int(round(optim["warmup_epochs"] * spe)), self.total_steps)
        start_step = self._resume_or_start()
        if info.is_main:
            save_config(cfg, self.out / "config.yaml")
        return self._run(start_step)

    def _optimizer(self) -> torch.optim.Optimizer:
        optim = self.cfg["optim"]
        groups = self.task.param_groups()
        for g in groups:
            g.setdefault("weight_decay", optim["weight_decay"])
            g.setdefault("lr_scale", 1.0)
        fused = self.info.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=optim["lr"], betas=tuple(optim["betas"]),
                                 eps=optim["eps"], weight_decay=optim["weight_decay"],
                                 fused=fused or None)

    def _loader(self) -> tuple[GlobalBatchSampler | ShardStream, DataLoader]:
        optim, info = self.cfg["optim"], self.info
        workers = int(self.cfg["data"]["num_workers"])
        streaming = isinstance(self.dataset, SeededDataset) and \
            isinstance(self.dataset.base, ShardSource)
        if streaming:
            sampler = ShardStream(self.dataset, optim["batch_size"], optim["accumulate"],
                                  info.world, info.rank, workers,
                                  int(self.cfg["data"]["shuffle_buffer"]), self.collate_fn)
        else:
            sampler = GlobalBatchSampler(len(self.dataset), optim["batch_size"],
                                         optim["accumulate"], info.world, info.rank,
                                         int(self.cfg["seed"]))
        if sampler.steps_per_epoch == 0:
            raise UserError(f"the dataset has {len(self.dataset)} images, fewer than one global "
                            f"batch ({sampler.global_batch} = batch_size {optim['batch_size']} x "
                            f"accumulate {optim['accumulate']} x {info.world} ranks)")
        if workers:
            _single_threaded_opencv()
        # A private generator: DataLoader iterators must not draw from the global torch RNG,
        # or a resumed run (which starts an iterator mid-epoch) would shift dropout randomness.
        common = dict(num_workers=workers, pin_memory=info.device.type == "cuda",
                      worker_init_fn=_worker_init if workers else None,
                      generator=torch.Generator().manual_seed(0),
                      prefetch_factor=4 if workers else None)
        if streaming:  # the workers batch
            return sampler, DataLoader(sampler, batch_size=None, **common)
        return sampler, DataLoader(self.dataset, batch_sampler=sampler,
                                   collate_fn=self.collate_fn, **common)

    # -- checkpoints --
    def _latest(self) -> Path | None:
        pointer = self.ckpt_root / "latest"
        if not pointer.is_file():
            return None
        path = self.ckpt_root / pointer.read_text().strip()
        return path if path.is_dir() else None

    def _resume_or_start(self) -> int:
        latest = self._latest()
        if latest is None:
            return 0
        if not self.cfg["train"]["resume"]:
            raise UserError(f"{self.out} already holds checkpoints ({latest.name}); resume with "
                            "train.resume=true or choose another output_dir")
        path = latest / f"rank{self.info.rank:05d}.pt"
        if not path.is_file():
            raise UserError(f"{latest} has no state for rank {self.info.rank}: resume with the "
                            "number of ranks that wrote it")
        # On the CPU first: RNG states must stay CPU tensors; modules and the optimizer copy
        # their tensors to the device as they load them.
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT or state["world"] != self.info.world:
            raise UserError(f"{path}: written by {state.get('world')} ranks; resume with the same "
                            f"number (this run has {self.info.world})")
        lanes, saved = getattr(self.sampler, "lanes", 0), state["sampler"].get("lanes", 0)
        if lanes and saved and lanes != saved:
            raise UserError(f"{path}: written streaming shards with data.num_workers="
                            f"{saved if saved > 1 else '0 or 1'}; resume with that (the shard "
                            "order depends on the number of workers)")
        try:
            for name, module in self.task.state_modules().items():
                module.load_state_dict(state["modules"][name])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"{path} does not fit this model/config ({str(e).splitlines()[0]}); "
                            "use another output_dir or the config that wrote it") from None
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.info.device)
        if self.info.is_main:
            print(f"resuming from {latest} (step {state['step']})", flush=True)
            changed = config_changes(state.get("config", {}), self.cfg)
            if changed:
                print("warning: resuming with a changed config (the schedules follow the new "
                      "values): " + ", ".join(changed), flush=True)
        return int(state["step"])

    def _save(self, step: int) -> None:
        info = self.info
        self._check_parameters(step)
        folder = self.ckpt_root / f"step_{step:08d}"
        state = {"format": STATE_FORMAT, "step": step, "world": info.world,
                 "modules": {k: m.state_dict() for k, m in self.task.state_modules().items()},
                 "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 "schedule": {"step": step, "total_steps": self.total_steps,
                              "warmup_steps": self.warmup_steps},
                 "sampler": {"epoch": step // self.sampler.steps_per_epoch,
                             "step_in_epoch": step % self.sampler.steps_per_epoch,
                             # streams: the order depends on the lanes (workers); 0: it does not
                             "lanes": getattr(self.sampler, "lanes", 0)},
                 "rng": rng_state(info.device), "config": self.cfg}
        atomic_torch_save(state, folder / f"rank{info.rank:05d}.pt")
        barrier(info)
        if info.is_main:
            self.task.export(self.out / "model.pt", step=step, train_config=self.cfg)
            write_text_atomic(self.ckpt_root / "latest", folder.name + "\n")
            self._prune(keep=max(1, int(self.cfg["train"]["keep_checkpoints"])))
        barrier(info)
        self.saved_step = step

    def _prune(self, keep: int) -> None:
        current = self._latest()
        folders = sorted(p for p in self.ckpt_root.glob("step_*") if p.is_dir())
        for old in folders[:-keep]:
            if old != current:
                shutil.rmtree(old, ignore_errors=True)

    # -- the loop --
    def _run(self, start_step: int) -> TrainResult:
        cfg, info = self.cfg, self.info
        train_cfg = cfg["train"]
        accumulate = int(cfg["optim"]["accumulate"])
        spe = self.sampler.steps_per_epoch
        stop_after = int(train_cfg["stop_after"]) or self.total_steps
        result = TrainResult(start_step, start_step, self.total_steps, output_dir=self.out)
        self.saved_step = start_step if start_step else -1
        logger = _Logger(self.out, info.is_main, int(train_cfg["log_every"]))
        bar = _progress(info.is_main and train_cfg["progress"], self.total_steps, start_step)
        timer = _Throughput(skip=2 if min(stop_after, self.total_steps) - start_step > 4 else 0)
        step = start_step
        with _stop_on_signals(self):
            while step < min(stop_after, self.total_steps):
                epoch, in_epoch = divmod(step, spe)
                self.sampler.set_epoch(epoch, in_epoch)
                batches = iter(self.loader)
                for _ in range(in_epoch, spe):
                    tick = time.perf_counter()
                    loss, metrics, images = self._step(step, batches, accumulate)
                    step += 1
                    rate = timer.add(images * info.world, time.perf_counter() - tick)
                    result.losses.append(loss)
                    lr = self.optimizer.param_groups[0]["lr"]
                    logger.log(step, {"loss": loss, "lr": lr, "images_per_s": rate, **metrics})
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
                    if step % int(train_cfg["checkpoint_every"]) == 0:
                        self._save(step)
                    if step >= min(stop_after, self.total_steps) or self._stop_agreed():
                        break
                del batches
                if self._stop_agreed() or step >= min(stop_after, self.total_steps):
                    break
        if self.saved_step != step:
            self._save(step)
        bar.close()
        logger.close()
        result.final_step, result.images_per_s, result.seconds = step, timer.rate(), timer.seconds
        return result

    def _step(self, step: int, batches: Iterator, accumulate: int):
        task, optimizer = self.task, self.optimizer
        optim = self.cfg["optim"]
        lr = cosine_schedule(step, self.total_steps, self.warmup_steps, optim["lr"],
                             optim["min_lr"])
        for g in optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        task.before_step(step, self.total_steps, optimizer)
        total = torch.zeros((), device=self.info.device)
        metrics: dict[str, float] = {}
        images = 0
        for micro in range(accumulate):
            batch = _next_batch(batches)
            images += task.batch_images(batch)
            last = micro == accumulate - 1
            sync = contextlib.ExitStack()
            if not last:
                for m in task.ddp_modules():
                    sync.enter_context(m.no_sync())
            with sync, torch.autocast(self.info.device.type, dtype=self.amp_dtype,
                                      enabled=self.amp_dtype is not None):
                loss, metrics = task.loss(batch, step, micro)
            self.scaler.scale(loss / accumulate).backward()
            total += loss.detach().float() / accumulate
        self.scaler.unscale_(optimizer)
        grad_norm = self._clip(float(optim["grad_clip"]))
        loss_value = self._check_finite(step, total, grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        task.after_step(step, self.total_steps)
        return loss_value, {**metrics, "grad_norm": float(grad_norm)}, images

    def _clip(self, max_norm: float) -> torch.Tensor:
        """Global gradient norm over replicated and sharded parameters; clip when max_norm > 0."""
        sharded = {id(p) for p in self.task.sharded_parameters()}
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        zero = torch.zeros((), device=self.info.device)
        replicated_sq = sum((p.grad.float().pow(2).sum() for p in params if id(p) not in sharded), zero)
        sharded_sq = sum((p.grad.float().pow(2).sum() for p in params if id(p) in sharded), zero)
        if self.info.world > 1 and sharded:
            dist.all_reduce(sharded_sq)
        norm = (replicated_sq + sharded_sq).sqrt()
        if max_norm > 0:
            coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_([p.grad for p in params], coef)
        return norm

    def _check_finite(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> float:
        """Stop every rank together (before the optimizer step) on a NaN/inf loss or gradient."""
        # With fp16, inf gradients are routine: GradScaler skips that step and lowers its scale.
        bad_grad = not torch.isfinite(grad_norm) if not self.scaler.is_enabled() else False
        flags = torch.stack([loss.float(), torch.tensor(float(not torch.isfinite(loss) or bad_grad),
                                                        device=loss.device),
                             torch.tensor(float(self._stop_signal), device=loss.device)])
        if self.info.world > 1:
            dist.all_reduce(flags)
        self._agreed_stop = bool(flags[2] > 0)
        if flags[1] > 0:
            loss_ok = bool(torch.isfinite(flags[0]))
            what = "gradient norm" if loss_ok else "loss"
            value = grad_norm if loss_ok else flags[0]
            kept = self._latest().name if self._latest() else "none written yet"
            raise TrainingDiverged(
                f"training diverged: the {what} became {'nan' if torch.isnan(value) else 'inf'} "
                f"at step {step + 1} (lr {self.optimizer.param_groups[0]['lr']:.3g}); stopped "
                f"without saving, last good checkpoint: {kept} in {self.ckpt_root} (lower optim.lr, "
                "use precision bf16 instead of fp16, or check the data)")
        return float(flags[0]) / self.info.world

    def _check_parameters(self, step: int) -> None:
        """Never checkpoint non-finite weights: a finite loss can precede a blown-up update."""
        bad = any(not bool(torch.isfinite(p).all())
                  for m in self.task.state_modules().values() for p in m.parameters())
        flag = torch.tensor(float(bad), device=self.info.device)
        if self.info.world > 1:
            dist.all_reduce(flag)
        if flag > 0:
            kept = self._latest().name if self._latest() else "none written yet"
            raise TrainingDiverged(
                f"training diverged: the weights became nan/inf at step {step} (lr "
                f"{self.optimizer.param_groups[0]['lr']:.3g}); stopped without saving, last good "
                f"checkpoint: {kept} in {self.ckpt_root} (lower optim.lr or check the data)")

    def _stop_agreed(self) -> bool:
        return getattr(self, "_agreed_stop", False)


# --- helpers ------------------------------------------------------------------------------------

def _next_batch(batches: Iterator) -> Any:
    """next(), but a user-fixable error raised in a DataLoader worker (a corrupt image, say)
    reaches the user as its own one-line message, without the worker's traceback that the
    DataLoader pastes into it."""
    try:
        return next(batches)
    except (UserError, ValueError, OSError) as e:
        text = str(e)
        if "Original Traceback" not in text:
            raise
        last = text.strip().splitlines()[-1]
        message = last.split(": ", 1)[1] if ": " in last else last
        try:
            error = type(e)(message)
        except TypeError:  # an exception type that wants other arguments
            error = UserError(message)
        raise error from None


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer):
    """First SIGINT/SIGTERM: finish the step, checkpoint, stop. Second SIGINT: stop at once."""
    def handler(signum, frame):
        if trainer._stop_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer._stop_signal = True
        if trainer.info.is_main:
            print(f"\n{signal.Signals(signum).name}: stopping after this step with a checkpoint",
                  flush=True)

    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Throughput:
    """Images/s over the steps of this run, skipping the first few (allocation, autotuning)."""

    def __init__(self, skip: int):
        self.skip, self.seen, self.images, self.seconds = skip, 0, 0, 0.0
        self.last = 0.0

    def add(self, images: int, seconds: float) -> float:
        self.seen += 1
        self.last = images / max(seconds, 1e-9)
        if self.seen > self.skip:
            self.images += images
            self.seconds += seconds
        return self.last

    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else self.last


class _Logger:
    """TensorBoard scalars and metrics.jsonl on rank 0, every `every` steps."""

    def __init__(self, out: Path, active: bool, every: int):
        self.active, self.every, self.writer = active, max(1, every), None
        if not active:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(out / "metrics.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            print("tensorboard is not installed (pip install 'lafs-edge[train]'): "
                  "no TensorBoard scalars, metrics.jsonl only", flush=True)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.active or step % self.every:
            return
        # Wall-clock stamp: a run's training time survives stops and resumes.
        self.jsonl.write(json.dumps({"step": step, "time": round(time.time(), 1),
                                     **{k: round(float(v), 6) for k, v in values.items()}}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self.active:
            self.jsonl.close()
            if self.writer is not None:
                self.writer.close()


def _progress(active: bool, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not active, unit="step", dynamic_ncols=True,
                mininterval=1.0, desc="train")
