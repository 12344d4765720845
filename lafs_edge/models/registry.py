"""Model registry (timm-style): `create_model(name, **overrides)`, `list_models()`, and the
checkpoint format every stage writes and every exporter reads.

A checkpoint is a plain dict of tensors and builtins, loadable with torch.load(weights_only=True):
    {"format": "lafs-edge-checkpoint/1", "arch": "part_fvit_tiny", "config": {...overrides},
     "state_dict": {...}, "threshold": 0.39 (optional), ...anything a training stage adds}

`threshold` is the open-set cosine threshold measured for these weights: stored only here (the
shipped students carry theirs; the weights index does not repeat it) and read only by
`checkpoint_threshold`, which `lafs-edge export` copies into the artifact's manifest.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, cast

import torch
from torch import nn

from lafs_edge.fileio import atomic_write
from lafs_edge.models.base import FaceModel
from lafs_edge.models.cnn_student import MobileFaceNet
from lafs_edge.models.part_vit import PartViT

CHECKPOINT_FORMAT = "lafs-edge-checkpoint/1"

_REGISTRY: dict[str, tuple[Callable[..., FaceModel], dict[str, Any], str]] = {}


def register(name: str, builder: Callable[..., FaceModel], description: str, **defaults: Any):
    _REGISTRY[name] = (builder, defaults, description)


register("part_fvit_base", PartViT,
         "reference part fViT: 196 landmarks, 8x8 patches, width 768, 12 blocks, 11x64 heads, "
         "MobileNetV3-Large landmark CNN",
         num_landmarks=196, patch_size=8, dim=768, depth=12, heads=11, head_dim=64,
         mlp_dim=2048, drop_path=0.1, landmark_trunk="large")
register("part_fvit_small", PartViT,
         "edge student: 196 landmarks, width 384, 8 blocks, 6x64 heads, MobileNetV3-Small CNN",
         num_landmarks=196, patch_size=8, dim=384, depth=8, heads=6, head_dim=64,
         mlp_dim=1536, drop_path=0.05, landmark_trunk="small")
register("part_fvit_tiny", PartViT,
         "edge student: 100 landmarks, width 192, 6 blocks, 3x64 heads, MobileNetV3-Small CNN",
         num_landmarks=100, patch_size=8, dim=192, depth=6, heads=3, head_dim=64,
         mlp_dim=768, drop_path=0.0, landmark_trunk="small")
register("mobilefacenet", MobileFaceNet,
         "CNN student (MobileFaceNet), about 1M parameters, 128-d embedding", embedding_dim=128)

# Named override sets for the part fViTs, applied under the caller's overrides. The `preset` key
# goes wherever overrides go: `create_model(name, preset="test")`, `model.overrides={preset: test}`
# in a training config, `model.overrides.preset=test` on `lafs-edge export`. Checkpoints store the
# resolved values, so they load without this table.
PRESETS: dict[str, dict[str, Any]] = {
    # The test suite's model: one narrow block on 16 landmarks, seconds per training run on a CPU.
    "test": dict(num_landmarks=16, dim=32, depth=1, heads=2, head_dim=16, mlp_dim=64,
                 landmark_dropout=0.0),
}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_description(name: str) -> str:
    return _REGISTRY[_check_name(name)][2]


def model_config(name: str, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
    builder, defaults, _ = _REGISTRY[_check_name(name)]
    return {**defaults, **_with_preset(preset, overrides)}


def _with_preset(preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    if preset is None:
        return dict(overrides)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; registered: {', '.join(sorted(PRESETS))}")
    return {**PRESETS[preset], **overrides}


def create_model(name: str, pretrained: bool = False, preset: str | None = None,
                 **overrides: Any) -> FaceModel:
    """Build a registered model; keyword overrides change its config, on top of a named
    `preset` (PRESETS) when given. `pretrained=True` loads the weights shipped with the package
    (sha256-checked; `lafs-edge models` lists them)."""
    overrides = _with_preset(preset, overrides)
    if pretrained:
        from lafs_edge.models.pretrained import weights_file

        path = weights_file(_check_name(name))
        return load_model(path, **overrides).train()
    builder, defaults, _ = _REGISTRY[_check_name(name)]
    if overrides:   # a config from a file or the command line: its size before its memory
        check_model_size(name, builder, {**defaults, **overrides})
    try:
        model = builder(**{**defaults, **overrides})
    except TypeError as e:
        raise ValueError(f"bad override for {name}: {e}") from None
    model.arch = name
    model.arch_config = dict(overrides)
    return model


# The largest registered model (part_fvit_base) has 67M parameters; a config asking for far more
# is a mistake or an attack (a 1.4 KB checkpoint asked for 5 GB before failing to load).
MAX_PARAMETERS = 500_000_000
MAX_DEPTH = 256   # blocks: building a model on the meta device still costs time per block


def check_model_size(name: str, builder: Callable[..., FaceModel], config: dict[str, Any]) -> int:
    """The parameter count of `builder(**config)`, counted on the meta device (shapes only, no
    memory); ValueError when over MAX_PARAMETERS."""
    depth = config.get("depth")
    if isinstance(depth, int) and not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"{name}: depth {depth} is outside 0-{MAX_DEPTH}")
    try:
        with torch.device("meta"):
            count = count_parameters(builder(**config))
    except TypeError as e:
        raise ValueError(f"bad override for {name}: {e}") from None
    except (RuntimeError, ValueError, OverflowError) as e:
        raise ValueError(f"{name}: the config cannot be built ({str(e).splitlines()[0][:200]})") from None
    if count > MAX_PARAMETERS:
        raise ValueError(f"{name}: the config asks for {count / 1e6:,.0f}M parameters (over "
                         f"{MAX_PARAMETERS / 1e6:,.0f}M, {4 * count / 2**30:,.1f} GiB in fp32); "
                         "refused before building it")
    return count


def _check_name(name: str) -> str:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return name


def save_checkpoint(model: nn.Module, path: str | os.PathLike, **extra: Any) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    module = cast(FaceModel, getattr(model, "module", model))  # unwrap DDP
    payload = {"format": CHECKPOINT_FORMAT, "arch": module.arch,
               "config": dict(module.arch_config), "state_dict": module.state_dict(), **extra}
    atomic_torch_save(payload, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a project checkpoint safely (weights_only) and check it is one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    _check_inflation(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, not a torch file at all
        raise ValueError(f"{path} is not a readable lafs-edge checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a lafs-edge checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    return payload


def checkpoint_threshold(path: str | os.PathLike) -> float | None:
    """The open-set cosine threshold stored with the weights, None when none was measured."""
    value = read_checkpoint(path).get("threshold")
    return float(value) if value is not None else None


def _check_inflation(path: Path) -> None:
    """torch.save writes its zip entries stored, not compressed: a checkpoint whose entries
    inflate to far more than its size (1 MB to 1 GiB) is crafted to exhaust memory on load."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return   # torch.load refuses it below
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return
    size = path.stat().st_size
    if inflated > 2 * size + 2**20:
        raise ValueError(f"{path} is not a lafs-edge checkpoint: its {size / 2**20:.1f} MiB "
                         f"inflate to {inflated / 2**20:,.0f} MiB (torch.save does not compress)")


def load_model(name_or_path: str | os.PathLike, **overrides: Any) -> FaceModel:
    """A registry name (random weights) or a checkpoint path -> model in eval mode."""
    if str(name_or_path) in _REGISTRY:
        model = create_model(str(name_or_path), **overrides)
    elif not Path(name_or_path).exists():
        raise FileNotFoundError(f"{name_or_path!s} is neither a registered model "
                                f"({', '.join(list_models())}) nor a checkpoint file")
    else:
        payload = read_checkpoint(name_or_path)
        model = create_model(payload["arch"], **{**payload["config"], **overrides})
        state = {k: v.float() if v.is_floating_point() else v
                 for k, v in payload["state_dict"].items()}  # shipped weights are fp16
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:   # a tensor of another shape: torch lists every one of them
            first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line),
                         str(e).splitlines()[0])
            raise ValueError(f"{name_or_path}: weights do not fit {payload['arch']} with its "
                             f"config ({first[:200]})") from None
        if missing or unexpected:
            raise ValueError(f"{name_or_path}: weights do not fit {payload['arch']} "
                             f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int = 112) -> int:
    """FLOPs (2 x multiply-accumulates) of one forward pass at batch 1, from torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, image_size, image_size)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops()
