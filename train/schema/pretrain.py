"""Stage 2, LAFS pretraining: the landmark CNN, views, DINO head and optimiser sections."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from lafs_edge.train.schema.checks import (AreaPair, AtLeastOne, NonNegative, Positive,
                                           PositivePair, Probability, Range, Seed, UnitInterval)
from lafs_edge.train.schema.shared import FaceData, Model, Optim, PhotometricAugment, Train


@dataclass
class Landmarks:
    checkpoint: str | None
    allow_random: bool


@dataclass
class Views:
    kind: Literal["landmarks", "random_crops"]
    global_crop_scale: AreaPair
    local_crop_scale: AreaPair | None
    crop_ratio: PositivePair
    flip: Probability
    local_views: Annotated[int, Range("[0, 64]")]
    local_landmarks: AtLeastOne
    shuffle: bool
    perturb_sigma: NonNegative
    local_size: Annotated[int, Range("[8, inf)")]


@dataclass
class Dino:
    out_dim: AtLeastOne
    hidden_dim: AtLeastOne
    bottleneck_dim: AtLeastOne
    head_layers: Annotated[int, Range("[1, 16]")]
    norm_last_layer: bool
    student_temp: Positive
    warmup_teacher_temp: Positive
    teacher_temp: Positive
    warmup_teacher_temp_epochs: NonNegative
    center_momentum: UnitInterval
    momentum_teacher: UnitInterval
    freeze_last_layer_epochs: NonNegative
    export: Literal["teacher", "student"]


@dataclass
class DinoOptim(Optim):
    scale_lr: bool
    weight_decay_end: NonNegative


@dataclass
class PretrainConfig:
    output_dir: str
    seed: Seed
    model: Model
    landmarks: Landmarks
    data: FaceData
    views: Views
    augment: PhotometricAugment
    dino: Dino
    optim: DinoOptim
    train: Train
