"""Stage 3, fine-tuning on (k-shot) labels: its data and fine-tuning sections."""
from __future__ import annotations

from dataclasses import dataclass

from lafs_edge.train.schema.checks import Count, Fraction, NonNegative, Seed
from lafs_edge.train.schema.shared import Data, FaceAugment, Head, Model, Optim, Train


@dataclass
class KShotData(Data):
    kshot_k: Count
    kshot_fraction: Fraction
    kshot_seed: Seed


@dataclass
class Finetune:
    pretrained: str | None
    landmarks: str | None
    freeze_landmarks: bool
    perturb_sigma: NonNegative
    layer_decay: Fraction


@dataclass
class FinetuneConfig:
    output_dir: str
    seed: Seed
    finetune: Finetune
    model: Model
    data: KShotData
    head: Head
    augment: FaceAugment
    optim: Optim
    train: Train
