"""Distillation into an edge student: the teacher, loss, student, data and augmentation sections."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from lafs_edge.train.schema.checks import (NonNegative, PositivePair, Probability, Range, Seed,
                                           UnitInterval)
from lafs_edge.train.schema.shared import FaceData, Head, Model, Optim, PhotometricAugment, Train


@dataclass
class DistillModel(Model):
    init: str | None


@dataclass
class DistillData(FaceData):
    labelled: bool


@dataclass
class DistillAugment(PhotometricAugment):
    """The same photometric augmentation on every view, plus a small pose change."""
    blur_prob: Probability  # type: ignore[assignment]  # one value for every view
    solarize_prob: Probability  # type: ignore[assignment]
    flip: Probability
    rotate_deg: Annotated[float, Range("[0, 180]")]
    scale: PositivePair
    shift: UnitInterval


@dataclass
class Distill:
    teacher: str | None
    loss: Literal["cosine", "l2"]
    projection: Literal["auto", "always", "never"]
    embedding_weight: NonNegative
    landmark_weight: NonNegative
    margin_weight: NonNegative
    targets: Literal["online", "cached"]
    target_cache: str | None


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
