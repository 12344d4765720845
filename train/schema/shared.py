"""Sections more than one training stage uses; a stage's own are in its file."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from lafs_edge.train.schema.checks import (AreaPair, AtLeastOne, ColorJitter, Count, Fraction,
                                           Length, NonNegative, PerView, Positive, PositivePair,
                                           Probability, Range)


@dataclass
class Model:
    arch: str
    overrides: dict[str, Any]


@dataclass
class Data:
    format: Literal["folder", "recordio", "webdataset", "synthetic"]
    root: str | None
    list_file: str | None
    bgr: bool
    num_workers: Annotated[int, Range("[0, 1024]")]
    shuffle_buffer: Count
    synthetic_size: AtLeastOne
    synthetic_classes: AtLeastOne


@dataclass
class FaceData(Data):
    """Pretraining and distillation also read 5-point landmark lists (train/sources.py)."""
    format: Literal["landmarks", "folder", "recordio", "webdataset", "synthetic"]  # type: ignore[assignment]  # widens Data.format


@dataclass
class Head:
    kind: Literal["cosface", "arcface"]
    scale: Positive
    margin: Annotated[float, Range("[0, 1.5]")] | None
    partial_fc_above: Count
    sample_rate: Fraction


@dataclass
class FaceAugment:
    flip: Probability
    crop_prob: Probability
    crop_scale: AreaPair
    crop_ratio: PositivePair
    randaugment_ops: Annotated[int, Range("[0, 20]")]
    randaugment_magnitude: Annotated[float, Range("[0, 10]")]
    mixup_prob: Probability
    mixup_alpha: Positive


@dataclass
class PhotometricAugment:
    """DINO's per-view photometric augmentation (pretraining)."""
    color_jitter: ColorJitter
    jitter_prob: Probability
    grayscale_prob: Probability
    blur_sigma: PositivePair
    blur_kernel: Annotated[int, Range("[1, 99]")]
    blur_prob: PerView
    solarize_prob: PerView


@dataclass
class Optim:
    batch_size: AtLeastOne
    accumulate: AtLeastOne
    epochs: AtLeastOne
    max_steps: Count
    warmup_epochs: NonNegative
    lr: Positive
    min_lr: NonNegative
    weight_decay: NonNegative
    betas: Annotated[list[float], Range("[0, 1)"), Length(2)]
    eps: Positive
    grad_clip: NonNegative
    rewarm_steps: Count


@dataclass
class Train:
    device: Literal["auto", "cuda", "cpu"]
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    checkpoint_every: AtLeastOne
    keep_checkpoints: AtLeastOne
    resume: bool
    stop_after: Count
    log_every: AtLeastOne
    progress: bool
    compile: bool
