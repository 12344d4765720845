"""Stage 1, supervised part fViT: its config."""
from __future__ import annotations

from dataclasses import dataclass

from lafs_edge.train.schema.checks import Seed
from lafs_edge.train.schema.shared import Data, FaceAugment, Head, Model, Optim, Train


@dataclass
class SupervisedConfig:
    output_dir: str
    seed: Seed
    model: Model
    data: Data
    head: Head
    augment: FaceAugment
    optim: Optim
    train: Train
