"""Training configs: a stage's packaged defaults, then YAML files, then `key=value` overrides.

    cfg = load_config("supervised", ["my_run.yaml"], ["optim.lr=5e-4", "model.arch=part_fvit_small"])

Every key must already exist in the stage's defaults (`train/configs/<stage>.yaml`), so a typo
fails at once instead of being silently ignored; only mappings whose default is `{}` (such as
`model.overrides`) accept new keys. Values on the command line are parsed as YAML (`1e-3` is a
float, `[0.4, 1.0]` a list, `null` None) and checked against the default's type. The resolved
config is written next to a run's outputs (`save_config`), as dinov2 does, so a run can be
repeated exactly with `--config OUTPUT_DIR/config.yaml`. Every numeric setting is then checked
against its range (RANGES): a negative batch size used to hang at step 0 and a zero one to divide
by zero, long after the command started.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import math
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import UserError
from ..fileio import write_text_atomic

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def packaged_config(name: str) -> Path:
    """A config shipped with the package (`supervised`, `supervised_smoke`, ...)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise UserError(f"no packaged config {name!r}; packaged: {known}")
    return path


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file() and not path.suffix and (CONFIG_DIR / f"{path}.yaml").is_file():
        path = CONFIG_DIR / f"{path}.yaml"  # `--config supervised_smoke` names a packaged file
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(stage: str, files: Iterable[str | os.PathLike] = (),
                overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Stage defaults <- each file in order <- each `dotted.key=value` override."""
    cfg = read_yaml(packaged_config(stage))
    free_form = set(empty_sections(cfg))
    for path in files:
        merge(cfg, read_yaml(path), str(path), free_form)
    for item in overrides:
        key, value = parse_override(item)
        merge(cfg, nest(key, value), "command line", free_form)
    check_ranges(cfg)
    return cfg


# Allowed values of every numeric setting of the stage defaults (a list is checked element by
# element; ORDERED lists are [low, high] pairs). tests/test_train_config.py checks every numeric
# key of every packaged stage has an entry here.
PROBABILITY = "[0, 1]"
RANGES = {
    "seed": "[0, 4294967295]", "data.kshot_seed": "[0, 4294967295]",
    "data.num_workers": "[0, 1024]", "data.shuffle_buffer": "[0, inf)",
    "data.synthetic_size": "[1, inf)", "data.synthetic_classes": "[1, inf)",
    "data.kshot_k": "[0, inf)", "data.kshot_fraction": "(0, 1]",
    "head.scale": "(0, inf)", "head.margin": "[0, 1.5]", "head.partial_fc_above": "[0, inf)",
    "head.sample_rate": "(0, 1]",
    "augment.flip": PROBABILITY, "augment.crop_prob": PROBABILITY,
    "augment.mixup_prob": PROBABILITY, "augment.jitter_prob": PROBABILITY,
    "augment.grayscale_prob": PROBABILITY, "augment.blur_prob": PROBABILITY,
    "augment.solarize_prob": PROBABILITY, "views.flip": PROBABILITY,
    "augment.crop_scale": "(0, 1]", "augment.crop_ratio": "(0, inf)",
    "augment.randaugment_ops": "[0, 20]", "augment.randaugment_magnitude": "[0, 10]",
    "augment.mixup_alpha": "(0, inf)", "augment.rotate_deg": "[0, 180]",
    "augment.scale": "(0, inf)", "augment.shift": "[0, 1]", "augment.color_jitter": "[0, inf)",
    "augment.blur_sigma": "(0, inf)", "augment.blur_kernel": "[1, 99]",
    "dino.out_dim": "[1, inf)", "dino.hidden_dim": "[1, inf)", "dino.bottleneck_dim": "[1, inf)",
    "dino.head_layers": "[1, 16]", "dino.student_temp": "(0, inf)", "dino.teacher_temp": "(0, inf)",
    "dino.warmup_teacher_temp": "(0, inf)", "dino.warmup_teacher_temp_epochs": "[0, inf)",
    "dino.center_momentum": "[0, 1]", "dino.momentum_teacher": "[0, 1]",
    "dino.freeze_last_layer_epochs": "[0, inf)",
    "distill.embedding_weight": "[0, inf)", "distill.landmark_weight": "[0, inf)",
    "distill.margin_weight": "[0, inf)",
    "finetune.perturb_sigma": "[0, inf)", "finetune.layer_decay": "(0, 1]",
    "optim.batch_size": "[1, inf)", "optim.accumulate": "[1, inf)", "optim.epochs": "[1, inf)",
    "optim.max_steps": "[0, inf)", "optim.warmup_epochs": "[0, inf)", "optim.lr": "(0, inf)",
    "optim.min_lr": "[0, inf)", "optim.weight_decay": "[0, inf)",
    "optim.weight_decay_end": "[0, inf)", "optim.betas": "[0, 1)", "optim.eps": "(0, inf)",
    "optim.grad_clip": "[0, inf)",
    "train.checkpoint_every": "[1, inf)", "train.keep_checkpoints": "[1, inf)",
    "train.stop_after": "[0, inf)", "train.log_every": "[1, inf)",
    "views.global_crop_scale": "(0, 1]", "views.local_crop_scale": "(0, 1]",
    "views.crop_ratio": "(0, inf)", "views.local_views": "[0, 64]",
    "views.local_landmarks": "[1, inf)", "views.local_size": "[8, inf)",
    "views.perturb_sigma": "[0, inf)",
}
ORDERED = {"augment.crop_scale", "augment.crop_ratio", "augment.scale", "augment.blur_sigma",
           "views.global_crop_scale", "views.local_crop_scale", "views.crop_ratio"}


def check_ranges(cfg: dict[str, Any]) -> None:
    """Every numeric setting finite and inside its range; [low, high] pairs in order."""
    for name, value in flatten(cfg):
        numbers = value if isinstance(value, list) else [value]
        if not numbers or not all(_is_number(v) for v in numbers):
            continue
        interval = RANGES.get(name, "(-inf, inf)")
        bad = next((v for v in numbers if not math.isfinite(v) or not _inside(v, interval)), None)
        if bad is not None:
            raise UserError(f"config: {name} = {value!r} is out of range: must be "
                            f"{'each ' if isinstance(value, list) else ''}in {interval}")
        if name in ORDERED and (len(numbers) != 2 or numbers[0] > numbers[1]):
            raise UserError(f"config: {name} = {value!r} must be a [low, high] pair with "
                            "low <= high")


def flatten(cfg: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in cfg.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _inside(value: float, interval: str) -> bool:
    """`value` in an interval written "[low, high)" (brackets closed, parentheses open)."""
    low_text, high_text = interval[1:-1].split(",")
    low, high = float(low_text), float(high_text)
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below


def empty_sections(cfg: dict[str, Any], prefix: str = "") -> Iterable[str]:
    """Dotted names of the mappings that are `{}` in the defaults: they accept any key."""
    for key, value in cfg.items():
        if isinstance(value, dict):
            if not value:
                yield f"{prefix}{key}"
            yield from empty_sections(value, f"{prefix}{key}.")


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad override {item!r}: expected dotted.key=value (e.g. optim.lr=1e-3)")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # an unparseable value stays a string; the type check below reports it
    return key.strip(), value


def nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


def merge(base: dict[str, Any], update: dict[str, Any], source: str,
          free_form: set[str] = frozenset(), prefix: str = "") -> None:
    """Merge `update` into `base` in place, refusing unknown keys and mismatched types."""
    for key, value in update.items():
        name = f"{prefix}{key}"
        if prefix.rstrip(".") in free_form:
            base[key] = copy.deepcopy(value)
            continue
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise UserError(f"{source}: unknown config key {name!r}{hint}")
        default = base[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise UserError(f"{source}: {name} is a section; set its keys ({name}.KEY=...)")
            merge(default, value, source, free_form, prefix=f"{name}.")
        else:
            base[key] = check_type(name, default, value, source)


def check_type(name: str, default: Any, value: Any, source: str) -> Any:
    """Keep the default's type: an int may stand for a float, None may replace anything."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UserError(f"{source}: {name} expects {type(default).__name__} "
                        f"(default {default!r}), got {value!r}")
    return value


def save_config(cfg: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the resolved config atomically (the record of what a run used)."""
    path = Path(path)
    write_text_atomic(path, yaml.safe_dump(cfg, sort_keys=False))
    return path
