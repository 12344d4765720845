"""The typed schema of the training configs: a dataclass per section, one per stage (STAGES).

A field's annotation is the type of its value: `Literal[...]` lists the allowed strings,
`X | None` also allows null, `dict[str, Any]` is a free-form mapping (model.overrides), a
dataclass is a nested section. `Annotated` adds what a type cannot say: the numeric range
(`Range`, checked on every element of a list) and a list's length (`Length`, optionally a
[low, high] pair). The default values are not here but in the packaged YAML files
(`configs/engine.yaml` under `configs/<stage>.yaml`), where every key is commented.

`train.config` checks each value's type as a file or an override is merged (`Leaf.coerce`), then
the resolved config against the ranges (`resolve`): out-of-range values used to fail long after
the start (a negative batch size hung at step 0), unknown choices only deep inside a stage.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Iterable, Literal

from lafs_edge.errors import UserError


@dataclass(frozen=True)
class Range:
    """Numbers allowed, written "[low, high)": brackets closed, parentheses open."""
    interval: str

    def __contains__(self, value: float) -> bool:
        low_text, high_text = self.interval[1:-1].split(",")
        low, high = float(low_text), float(high_text)
        above = value >= low if self.interval[0] == "[" else value > low
        below = value <= high if self.interval[-1] == "]" else value < high
        return math.isfinite(value) and above and below


@dataclass(frozen=True)
class Length:
    """A list of exactly `count` numbers; `ordered`: a [low, high] pair with low <= high."""
    count: int
    ordered: bool = False


Seed = Annotated[int, Range("[0, 4294967295]")]
Count = Annotated[int, Range("[0, inf)")]
AtLeastOne = Annotated[int, Range("[1, inf)")]
Positive = Annotated[float, Range("(0, inf)")]
NonNegative = Annotated[float, Range("[0, inf)")]
Probability = Annotated[float, Range("[0, 1]")]
Fraction = Annotated[float, Range("(0, 1]")]
AreaPair = Annotated[list[float], Range("(0, 1]"), Length(2, ordered=True)]
PositivePair = Annotated[list[float], Range("(0, inf)"), Length(2, ordered=True)]
# brightness, contrast, saturation, hue
ColorJitter = Annotated[list[float], Range("[0, inf)"), Length(4)]
# a probability per view: global view 1, global view 2, local views
PerView = Annotated[list[float], Range("[0, 1]"), Length(3)]
UnitInterval = Annotated[float, Range("[0, 1]")]


@dataclass
class Model:
    arch: str
    overrides: dict[str, Any]


@dataclass
class DistillModel(Model):
    init: str | None


@dataclass
class Landmarks:
    checkpoint: str | None
    allow_random: bool


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
class KShotData(Data):
    kshot_k: Count
    kshot_fraction: Fraction
    kshot_seed: Seed


@dataclass
class FaceData(Data):
    """Pretraining and distillation also read 5-point landmark lists (train/sources.py)."""
    format: Literal["landmarks", "folder", "recordio", "webdataset", "synthetic"]  # type: ignore[assignment]  # widens Data.format


@dataclass
class DistillData(FaceData):
    labelled: bool


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
class Finetune:
    pretrained: str | None
    landmarks: str | None
    freeze_landmarks: bool
    perturb_sigma: NonNegative
    layer_decay: Fraction


@dataclass
class Distill:
    teacher: str | None
    loss: Literal["cosine", "l2"]
    projection: Literal["auto", "always", "never"]
    embedding_weight: NonNegative
    landmark_weight: NonNegative
    margin_weight: NonNegative
    targets: Literal["online", "loader", "cached"]
    target_cache: str | None
    relational_weight: NonNegative
    relational_temp: Positive
    relational_anchors: AtLeastOne


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


@dataclass
class DinoOptim(Optim):
    scale_lr: bool
    weight_decay_end: NonNegative


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


STAGES = {"supervised": SupervisedConfig, "pretrain": PretrainConfig,
          "finetune": FinetuneConfig, "distill": DistillConfig}


def stage_schema(stage: str) -> type:
    if stage not in STAGES:
        raise UserError(f"no training stage {stage!r}; stages: {', '.join(STAGES)}")
    return STAGES[stage]


@functools.cache
def fields_of(section: type) -> dict[str, Any]:
    """{key: resolved annotation} of a section, in declaration order."""
    hints = typing.get_type_hints(section, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


def is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def is_free_form(hint: Any) -> bool:
    """A mapping that takes any key (model.overrides): files and overrides add to it."""
    return typing.get_origin(hint) is dict


@dataclass(frozen=True)
class Leaf:
    """What one setting accepts, read from its annotation."""
    kind: type                       # bool, int, float, str or list (of floats)
    nullable: bool = False
    choices: tuple[str, ...] = ()
    range: Range | None = None
    length: Length | None = None

    @staticmethod
    @functools.cache
    def of(hint: Any) -> Leaf:
        nullable = typing.get_origin(hint) in (typing.Union, types.UnionType)
        if nullable:
            (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        marks: Iterable[Any] = ()
        if typing.get_origin(hint) is Annotated:
            hint, *marks = typing.get_args(hint)
        marks_by_type = {type(mark): mark for mark in marks}
        range_, length = marks_by_type.get(Range), marks_by_type.get(Length)
        if typing.get_origin(hint) is Literal:
            return Leaf(str, nullable, choices=typing.get_args(hint))
        if typing.get_origin(hint) is list:
            return Leaf(list, nullable, range=range_, length=length)
        return Leaf(hint, nullable, range=range_)

    def expects(self) -> str:
        if self.choices:
            text = f"one of {', '.join(self.choices)}"
        elif self.kind is list:
            text = f"a list of {self.length.count} numbers" if self.length else "a list of numbers"
        else:
            text = self.kind.__name__
        return f"{text} or null" if self.nullable else text

    def coerce(self, value: Any) -> Any:
        """`value` as this setting holds it (an int or a `1e-3` string stands for a float);
        ValueError when it is of another type."""
        if value is None and self.nullable:
            return None
        if self.choices:
            ok = isinstance(value, str) and value in self.choices
        elif self.kind is list:
            numbers = [_as_float(v) for v in value] if isinstance(value, list) else None
            ok = (numbers is not None and None not in numbers
                  and (self.length is None or len(numbers) == self.length.count))
            value = numbers if ok else value
        elif self.kind is float:
            ok = _as_float(value) is not None
            value = _as_float(value) if ok else value
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            raise ValueError(self.expects())
        return value

    def check_range(self, name: str, value: Any) -> None:
        """Every number finite and inside the range; a [low, high] pair in order."""
        if value is None or self.kind not in (int, float, list):
            return
        numbers = value if isinstance(value, list) else [value]
        interval = self.range or Range("(-inf, inf)")
        if any(v not in interval for v in numbers):
            raise UserError(f"config: {name} = {value!r} is out of range: must be "
                            f"{'each ' if isinstance(value, list) else ''}in {interval.interval}")
        if self.length and self.length.ordered and numbers[0] > numbers[1]:
            raise UserError(f"config: {name} = {value!r} must be a [low, high] pair with "
                            "low <= high")


def _as_float(value: Any) -> float | None:
    if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def leaves(section: type, prefix: str = "") -> Iterable[tuple[str, Leaf]]:
    """(dotted key, Leaf) of every setting of a section or stage, free-form mappings excluded."""
    for key, hint in fields_of(section).items():
        if is_section(hint):
            yield from leaves(hint, f"{prefix}{key}.")
        elif not is_free_form(hint):
            yield f"{prefix}{key}", Leaf.of(hint)


def resolve(section: type, cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The merged config in the schema's key order, every key set and every number in range."""
    out: dict[str, Any] = {}
    for key, hint in fields_of(section).items():
        name = f"{prefix}{key}"
        if key not in cfg:  # the packaged engine.yaml and <stage>.yaml set every key
            raise UserError(f"config: {name} has no value (missing from the packaged defaults)")
        if is_section(hint):
            out[key] = resolve(hint, cfg[key], f"{name}.")
        else:
            if not is_free_form(hint):
                Leaf.of(hint).check_range(name, cfg[key])
            out[key] = cfg[key]
    return out
