"""Stage 1: supervised part fViT with CosFace / ArcFace (Partial FC above a number of identities).

The landmark CNN has no landmark labels: it learns end to end through the differentiable patch
sampler, because the whole PartViT (CNN, sampler, ViT) is one module under one optimizer. Any
registered model works (`model.arch=mobilefacenet` trains the CNN student the same way).

    from lafs_edge.train.config import load_config
    from lafs_edge.train.supervised import train
    result = train(load_config("supervised", ["supervised_smoke"], ["data.root=../shared/data/orl"]))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from lafs_edge.errors import UserError
from lafs_edge.models import FaceModel, create_model, save_checkpoint
from lafs_edge.train.augment import FaceAugment, mixup, to_tensor
from lafs_edge.train.engine import (DistInfo, SeededDataset, Task, Trainer, TrainResult,
                                    distributed, split_decay, wrap_ddp)
from lafs_edge.train.engine.batching import SizedDataset
from lafs_edge.train.partial_fc import build_margin_loss

IMAGE_SIZE = 112


class SyntheticFaces(Dataset):
    """Deterministic labelled images for benchmarks and engine tests: a smooth random pattern
    per identity plus per-image noise, so a model can learn it. Not faces; never for accuracy."""

    def __init__(self, size: int, num_classes: int, seed: int = 0):
        self.size, self.num_classes, self.seed = size, num_classes, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        label = index % self.num_classes
        pattern = np.random.default_rng([self.seed, label]).uniform(0, 255, (7, 7, 3))
        image = cv2.resize(pattern.astype(np.float32), (IMAGE_SIZE, IMAGE_SIZE),
                           interpolation=cv2.INTER_CUBIC)
        noise = np.random.default_rng([self.seed, label, index]).normal(0, 20, image.shape)
        return np.clip(image + noise, 0, 255).astype(np.uint8), label


def build_dataset(data_cfg: dict[str, Any], seed: int) -> tuple[SizedDataset, int]:
    """The raw labelled dataset ((RGB uint8, label) items) and its number of identities."""
    kind = data_cfg["format"]
    if kind == "synthetic":
        return SyntheticFaces(data_cfg["synthetic_size"], data_cfg["synthetic_classes"], seed), \
            data_cfg["synthetic_classes"]
    if kind == "folder":
        from lafs_edge.train.data.folders import LabelledFolder

        if not data_cfg["root"]:
            raise UserError("data.root is required (a folder with one sub-folder per identity)")
        dataset = LabelledFolder(data_cfg["root"], list_file=data_cfg["list_file"])
        if dataset.num_classes < 2:
            raise UserError(f"{data_cfg['root']}: {dataset.num_classes} identity; supervised "
                            "training needs at least 2")
        return dataset, dataset.num_classes
    if kind == "recordio":
        from lafs_edge.train.data.recordio import RecordIODataset

        if not data_cfg["root"]:
            raise UserError("data.root is required (the folder holding train.rec and train.idx)")
        records = RecordIODataset(data_cfg["root"], bgr=bool(data_cfg.get("bgr", False)))
        return records, records.num_classes
    if kind == "webdataset":  # streamed by the Trainer (engine.ShardStream)
        from lafs_edge.train.data.webdataset import ShardSource

        source = ShardSource(data_cfg["root"], bgr=bool(data_cfg.get("bgr", False)))
        return source, source.num_classes
    raise UserError(f"data.format must be folder, recordio, webdataset or synthetic, got {kind!r}")


class FaceTransform:
    """(RGB uint8, label), rng -> (normalised (3, 112, 112) tensor, label). Crops that are not
    112x112 (ORL, Yale: no landmarks to align with) are letterboxed by `to_112` first."""

    def __init__(self, augment: FaceAugment | None):
        self.augment = augment

    def __call__(self, item: tuple[np.ndarray, int], rng: np.random.Generator):
        image, label = item
        if image.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
            from lafs_edge.image_folders import to_112

            image = to_112(image, IMAGE_SIZE)
        if self.augment is not None:
            image = self.augment(image, rng)
        return to_tensor(image), label


class SupervisedTask(Task):
    def __init__(self, cfg: dict[str, Any], num_classes: int):
        self.cfg, self.num_classes = cfg, num_classes

    def setup(self, info: DistInfo) -> None:
        self.info = info
        self.backbone = self.build_backbone().to(info.device)
        margin, self.sharded = build_margin_loss(self.backbone.embedding_dim, self.num_classes,
                                                 self.cfg["head"], int(self.cfg["seed"]))
        self.margin_loss = margin.to(info.device)
        self.backbone_ddp = wrap_ddp(self.backbone, info)
        # Partial FC shards are per rank (not replicated); a plain head is averaged by DDP.
        self.head = self.margin_loss if self.sharded else wrap_ddp(self.margin_loss, info)
        aug = self.cfg["augment"]
        # Under Partial FC every rank must run the same collectives: mix (or pass weight 1)
        # on every micro-batch whenever mixup is configured at all.
        self.use_mixup = aug["mixup_prob"] > 0

    def build_backbone(self) -> FaceModel:
        """The network to train, before DDP wraps it (fine-tuning loads pretrained weights and
        freezes parts here)."""
        model_cfg = self.cfg["model"]
        return create_model(model_cfg["arch"], **model_cfg["overrides"])

    def state_modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.margin_loss}

    def param_groups(self) -> list[dict[str, Any]]:
        return split_decay([self.backbone, self.margin_loss])

    def ddp_modules(self) -> list[DistributedDataParallel]:
        return [m for m in (self.backbone_ddp, self.head) if isinstance(m, DistributedDataParallel)]

    def sharded_parameters(self) -> list[nn.Parameter]:
        return list(self.margin_loss.parameters()) if self.sharded else []

    def batch_images(self, batch) -> int:
        return int(batch[0].shape[0])

    def loss(self, batch, step: int, micro: int):
        images, labels = batch
        device = self.info.device
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if not self.use_mixup:
            return self.head(self.backbone_ddp(images), labels), {}
        aug = self.cfg["augment"]
        # Seeded by the micro-batch's slot in the global batch (as GlobalBatchSampler numbers
        # them): the same mixing on any number of ranks, and exact on resume.
        slot = micro * self.info.world + self.info.rank
        rng = np.random.default_rng([int(self.cfg["seed"]), step, slot])
        images, partner, weight = mixup(images, aug["mixup_prob"], aug["mixup_alpha"], rng)
        return self.head(self.backbone_ddp(images), labels, partner, weight), {}

    def export(self, path: Path, **extra: Any) -> None:
        save_checkpoint(self.backbone, path, **extra)


def train(cfg: dict[str, Any], dataset: SizedDataset | None = None,
          task: SupervisedTask | None = None) -> TrainResult:
    """Run (or resume) supervised training as configured. `dataset` (raw (RGB uint8, label)
    items) replaces the configured one; `task` lets tests inject a variant."""
    seed = int(cfg["seed"])
    with distributed(cfg["train"]["device"]) as info:
        if dataset is None:
            dataset, num_classes = build_dataset(cfg["data"], seed)
        else:
            num_classes = int(getattr(dataset, "num_classes"))
        augment = FaceAugment.from_config(cfg["augment"])
        train_set = SeededDataset(dataset, FaceTransform(augment), seed)
        task = task or SupervisedTask(cfg, num_classes)
        return Trainer(cfg, task, train_set, info=info).fit()
