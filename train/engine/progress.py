"""What a run reports: TensorBoard scalars and `metrics.jsonl` on rank 0, images/s, and a tqdm bar.
Diagnostics go to the `logging` module (logger `lafs_edge.train.engine.*`)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


class Throughput:
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


class MetricsLog:
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
            logger.warning("tensorboard is not installed (pip install 'lafs-edge[train]'): "
                           "no TensorBoard scalars, metrics.jsonl only")

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


def progress_bar(active: bool, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not active, unit="step", dynamic_ncols=True,
                mininterval=1.0, desc="train")
