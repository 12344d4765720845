"""Distillation into an edge student: the teacher, loss, student, data and augmentation sections."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from lafs_edge.train.schema.checks import (AreaPair, AtLeastOne, Length, NonNegative, Positive,
                                           PositivePair, Probability, Range, Seed, UnitInterval)
from lafs_edge.train.schema.shared import FaceData, Head, Model, Optim, PhotometricAugment, Train


@dataclass
class DistillModel(Model):
    init: str | None


@dataclass
class DistillData(FaceData):
    labelled: bool


@dataclass
class HardAugment:
    """In-the-wild degradations of consistent teaching (distill.targets=loader only)."""
    illumination_prob: Probability
    gamma: PositivePair
    low_res_prob: Probability
    low_res_scale: AreaPair
    jpeg_prob: Probability
    jpeg_quality: Annotated[list[int], Range("[1, 100]"), Length(2, ordered=True)]
    erase_prob: Probability
    erase_area: AreaPair
    point_jitter: NonNegative
    mixup_prob: Probability


@dataclass
class DistillAugment(PhotometricAugment):
    """The same photometric augmentation on every view, plus a small pose change."""
    blur_prob: Probability  # type: ignore[assignment]  # one value for every view
    solarize_prob: Probability  # type: ignore[assignment]
    flip: Probability
    rotate_deg: Annotated[float, Range("[0, 180]")]
    scale: PositivePair
    shift: UnitInterval
    hard: HardAugment


@dataclass
class Distill:
    teacher: str | None
    loss: Literal["cosine", "l2"]
    projection: Literal["auto", "always", "never"]
    embedding_weight: NonNegative
    hard_gamma: Annotated[float, Range("[0, 8]")]
    landmark_weight: NonNegative
    margin_weight: NonNegative
    targets: Literal["online", "loader", "cached"]
    target_cache: str | None
    relational_weight: NonNegative
    relational_temp: Positive
    relational_anchors: AtLeastOne
    ema_decay: Annotated[float, Range("[0, 1)")]


@dataclass
class DistillConfig:
    output_dir: str
    seed: Seed
    distill: Distill
    model: DistillModel
    data: DistillData
    head: Head
    augment: DistillAugment
    optim: Optim
    train: Train
