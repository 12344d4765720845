"""Cached teacher targets (`distill.targets=cached`, and the relational loss's bank): the teacher
embeds each face's clean 112x112 crop and its mirror image once; the result is saved beside the
run (or at `distill.target_cache`) and reused while what it depends on (`_targets_key`) holds.

Offline distillation is for small compute budgets: training on fixed targets only flips (no pose
or photometric augmentation), and students trained on fixed targets over-fit (Beyer et al. 2022).
Building the targets for the 47k-face pool takes minutes; with several ranks, rank 0 builds them
and the others wait for its file.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import Dataset

from lafs_edge.align import CROP_SIZE
from lafs_edge.errors import UserError
from lafs_edge.models.registry import atomic_torch_save
from lafs_edge.train.data.webdataset import ShardSource
from lafs_edge.train.distill_views import MIRROR, DistillViews
from lafs_edge.train.engine import DistInfo, barrier
from lafs_edge.train.engine.batching import SizedDataset
from lafs_edge.train.sources import build_source, normalise
from lafs_edge.train.teachers import load_teacher

TARGETS_FORMAT = "lafs-edge-teacher-targets/1"
TARGETS_TIMEOUT_S = 4 * 3600  # how long the other ranks wait for rank 0 to compute the targets


class TeacherTargets(Dataset):
    """Offline targets: uint8 clean 112x112 crops (N, 3, 112, 112), the teacher's embeddings of
    each crop and of its mirror image (N, 2, D), labels (N,)."""

    def __init__(self, crops: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                 num_classes: int):
        self.crops, self.targets, self.labels, self.num_classes = crops, targets, labels, num_classes

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        return self.crops[i], self.targets[i], int(self.labels[i])


def compute_teacher_targets(cfg: dict[str, Any], labelled: bool, batch: int = 64) -> dict:
    """Run the teacher once over every face (clean and mirrored views)."""
    source = build_source(cfg["data"], int(cfg["seed"]), labelled=labelled)
    teacher = load_teacher(cfg["distill"]["teacher"], torch.device("cpu"))
    views = DistillViews(cfg["augment"], teacher.geometry)
    # Preallocated: tens of thousands of small kept tensors between each batch's large
    # temporaries fragmented the heap to ~0.5 MB per face (17 GB for the 47k-face pool).
    total = len(source)
    crops = torch.empty((total, 3, CROP_SIZE, CROP_SIZE), dtype=torch.uint8)
    targets = torch.empty((total, 2, teacher.embedding_dim))
    labels = torch.empty(total, dtype=torch.int64)
    started = time.perf_counter()
    faces = _faces_in_order(source)
    key = "student" if teacher.geometry.is_student_crop else "teacher"  # the teacher's crop
    for start in range(0, total, batch):
        stop = min(start + batch, total)
        items = [next(faces) for _ in range(start, stop)]
        plain = [views.cut(item, np.eye(3)) for item in items]
        mirrored = [views.cut(item, MIRROR) for item in items]
        targets[start:stop] = torch.stack(
            [teacher(normalise(torch.stack([c[key] for c in cut])))[0] for cut in (plain, mirrored)], 1)
        crops[start:stop] = torch.stack([c["student"] for c in plain])
        labels[start:stop] = torch.tensor([c["label"] for c in plain])
        if stop == total or (start // batch) % 20 == 0:
            logging.getLogger(__name__).info("teacher targets: %d/%d faces (%.0f s)", stop, total,
                                             time.perf_counter() - started)
    return {"format": TARGETS_FORMAT, "key": _targets_key(cfg, labelled),
            "crops": crops, "targets": targets, "labels": labels,
            "num_classes": int(getattr(source, "num_classes", 0))}


def _faces_in_order(source: SizedDataset):
    """Every item once, in order (WebDataset shards are read sequentially, not indexed)."""
    if hasattr(source, "read"):
        shards = cast(ShardSource, source)
        return (shards.decode(sample) for sample in shards.read(shards.shards))
    return (source[i] for i in range(len(source)))


def _targets_key(cfg: dict[str, Any], labelled: bool) -> str:
    """What the targets depend on: a cache computed for other data or another teacher is stale."""
    data = cfg["data"]
    return repr((str(cfg["distill"]["teacher"]), data["format"], str(data["root"]),
                 str(data["list_file"]), labelled, bool(data["bgr"])))


def teacher_targets(cfg: dict[str, Any], labelled: bool, info: DistInfo) -> TeacherTargets:
    """Load the cached targets. Rank 0 reads the file and computes and saves it (atomically)
    when it is missing or stale; the other ranks wait at a barrier and then read it."""
    path = Path(cfg["distill"]["target_cache"] or Path(cfg["output_dir"]) / "teacher_targets.pt")
    key = _targets_key(cfg, labelled)
    state = None
    if info.is_main:
        state = _read_targets(path)
        if state is None or state["key"] != key:
            state = compute_teacher_targets(cfg, labelled)
            atomic_torch_save(state, path)
    barrier(info, timeout_s=TARGETS_TIMEOUT_S)
    if not info.is_main:
        state = _read_targets(path)
        if state is None or state["key"] != key:
            raise UserError(f"rank 0 did not write the teacher targets {path} (is "
                            "distill.target_cache on storage every rank shares?)")
    assert state is not None
    return TeacherTargets(state["crops"], state["targets"], state["labels"], state["num_classes"])


def _read_targets(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: recompute rather than train on it
        logging.getLogger(__name__).warning("%s: unreadable (%s); recomputing", path,
                                            str(e).splitlines()[0])
        return None
    return state if isinstance(state, dict) and state.get("format") == TARGETS_FORMAT else None
