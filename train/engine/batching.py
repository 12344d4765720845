"""Data order: which samples each rank's micro-batches hold, and the DataLoader that delivers them.

`GlobalBatchSampler` splits each global batch (micro_batch x accumulate x world) into fixed
per-rank slots, so a run sees the same global batches on any number of ranks, and resumes at the
exact step. `SeededDataset` seeds each sample's augmentation from (seed, epoch, index):
independent of ranks, workers and restarts. A `SeededDataset` over WebDataset shards
(`data.webdataset.ShardSource`) streams instead (`ShardStream`): shards split over ranks and
workers, equal batch counts per rank, exact resume; its order depends on the number of ranks and
workers.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator, Protocol, cast

import numpy as np
import torch
from torch.utils.data import (DataLoader, Dataset, IterableDataset, Sampler, default_collate,
                              get_worker_info)

from lafs_edge.errors import UserError
from lafs_edge.train.data.webdataset import ShardSource
from lafs_edge.train.engine.distributed import DistInfo


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


class SizedDataset(Protocol):
    """An indexable source with a length: every dataset here, and `ShardSource` (torch's
    Dataset declares no __len__)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


class SeededDataset(Dataset):
    """`transform(base[index], rng)` with rng seeded from (seed, epoch, index)."""

    def __init__(self, base: SizedDataset, transform: Callable[[Any, np.random.Generator], Any],
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
        self.source = cast(ShardSource, data.base)   # build_loader streams ShardSource bases
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


def build_loader(cfg: dict[str, Any], dataset: SeededDataset, info: DistInfo,
                 collate_fn: Callable | None = None,
                 ) -> tuple[GlobalBatchSampler | ShardStream, DataLoader]:
    """This rank's sampler (or stream) and the DataLoader over it."""
    optim = cfg["optim"]
    workers = int(cfg["data"]["num_workers"])
    streaming = isinstance(dataset, SeededDataset) and isinstance(dataset.base, ShardSource)
    sampler: GlobalBatchSampler | ShardStream
    if streaming:
        sampler = ShardStream(dataset, optim["batch_size"], optim["accumulate"], info.world,
                              info.rank, workers, int(cfg["data"]["shuffle_buffer"]), collate_fn)
    else:
        sampler = GlobalBatchSampler(len(dataset), optim["batch_size"], optim["accumulate"],
                                     info.world, info.rank, int(cfg["seed"]))
    if sampler.steps_per_epoch == 0:
        raise UserError(f"the dataset has {len(dataset)} images, fewer than one global "
                        f"batch ({sampler.global_batch} = batch_size {optim['batch_size']} x "
                        f"accumulate {optim['accumulate']} x {info.world} ranks)")
    if workers:
        _single_threaded_opencv()
    # A private generator: DataLoader iterators must not draw from the global torch RNG,
    # or a resumed run (which starts an iterator mid-epoch) would shift dropout randomness.
    common: dict[str, Any] = dict(num_workers=workers, pin_memory=info.device.type == "cuda",
                                  worker_init_fn=_worker_init if workers else None,
                                  generator=torch.Generator().manual_seed(0),
                                  prefetch_factor=4 if workers else None)
    if isinstance(sampler, ShardStream):  # streaming: the workers batch
        return sampler, DataLoader(sampler, batch_size=None, **common)
    return sampler, DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, **common)


def next_batch(batches: Iterator) -> Any:
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


def _worker_init(_: int) -> None:
    import signal

    torch.set_num_threads(1)  # workers are the parallelism; more threads would oversubscribe
    # Ctrl-C or a SIGTERM to the whole process group reaches the workers too: the trainer stops
    # after its step, checkpoints and shuts them down itself (they also exit when it dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _single_threaded_opencv() -> None:
    """Before forking DataLoader workers: OpenCV's thread pool is not fork-safe. A worker forked
    from a process whose pool has threads hangs in its first parallel cv2 call (or in
    cv2.setNumThreads), waiting for threads that do not exist in the child. One thread in the
    parent (whose images the workers decode anyway) is what the workers inherit."""
    import cv2

    cv2.setNumThreads(1)
