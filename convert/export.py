"""`build_artifact`: one model -> one artifact folder (model file + manifest.json), built in a
temporary folder beside the destination and renamed into place only when complete, so a failure
never leaves a half-written artifact.

Every target module (onnx, openvino, tflite, coreml, pytorch) exposes
`export(model, folder, precision, calib, float_groups) -> Converted`: `model` is the source
nn.Module (each target wraps it in `ExportModel` with the layout it wants), `calib` a float32 NCHW
batch of normalised aligned faces and `float_groups` the quantization groups to keep in float
(`quantize.choose_float_groups`; both used by int8 only).
"""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch import nn

from lafs_edge.errors import UserError
from lafs_edge.models import FaceModel, PartViT, sample_patches, set_fused_attention

# target -> precisions it exports. ONNX is the interchange format (fp32); int8 and fp16 artifacts
# come from the runtimes' own tools, which know their kernels.
SUPPORTED = {
    "onnx": ("fp32",),
    "openvino": ("fp32", "fp16", "int8"),
    "tflite": ("fp32", "fp16", "int8"),
    "coreml": ("fp32", "fp16", "int8"),
    "pytorch": ("fp32",),
}
ALL_TARGETS = ("onnx", "openvino", "tflite", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class Converted:
    """What a target module produced inside the temporary folder."""
    model_file: str
    input_shape: list[int]
    layout: str = "NCHW"
    weights_file: str | None = None
    kept_float: list[str] = field(default_factory=list)  # quantization: groups left in float
    details: dict[str, Any] = field(default_factory=dict)  # converter-specific facts for the manifest


def check_request(target: str, precision: str) -> None:
    if target not in SUPPORTED:
        raise UserError(f"unknown target {target!r}; choose from {', '.join(SUPPORTED)} or all")
    if precision not in SUPPORTED[target]:
        raise UserError(f"{target} does not export {precision}: supported "
                        f"{', '.join(SUPPORTED[target])}"
                        + (" (use openvino or tflite for int8)" if target == "onnx" else ""))


class PatchSampler(nn.Module):
    """The landmark sampler as a named module, so quantizers can address it (keep it float)."""

    def __init__(self, size: int, method: str):
        super().__init__()
        self.size, self.method = size, method

    def forward(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return sample_patches(images, points, self.size, self.method)


class ExportModel(nn.Module):
    """What every exporter traces: the model in eval mode, explicit attention (SDPA is the op
    converters handle least consistently), the sampler as a sub-module, and an optional NHWC
    input (TFLite: Android bitmaps are NHWC). Numerically identical to `model(images)`."""

    def __init__(self, model: FaceModel, layout: str = "NCHW"):
        super().__init__()
        self.model = model.eval()
        self.layout = layout
        self.is_part_vit = isinstance(model, PartViT)
        if isinstance(model, PartViT):
            set_fused_attention(model, False)
            self.sampler = PatchSampler(model.patch_size, model.sampler)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.layout == "NHWC":
            images = images.permute(0, 3, 1, 2)
        if not self.is_part_vit:
            return self.model(images)
        model = cast(PartViT, self.model)
        points = model.landmarks(images)
        return model.encode_patches(self.sampler(images, points))

    def example(self, batch: int = 1) -> torch.Tensor:
        size = self.model.image_size
        shape = (batch, size, size, 3) if self.layout == "NHWC" else (batch, 3, size, size)
        return torch.zeros(shape).uniform_(-1, 1, generator=torch.Generator().manual_seed(0))

    def to_layout(self, nchw: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(nchw.transpose(0, 2, 3, 1) if self.layout == "NHWC" else nchw)


M = TypeVar("M", bound=nn.Module)


def fuse_batchnorm(model: M) -> M:
    """A copy of `model` (eval) with every Conv2d -> BatchNorm2d pair folded into the conv.

    Lossless in eval mode. OpenVINO's frontend folds them too, but renames the fused conv
    (`Multiply_123`), which hides it from NNCF's ignored scope; folded here, the conv keeps its
    module path."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = nn.Identity()
    return fused


def build_artifact(model: FaceModel, target: str, precision: str, folder: str | os.PathLike,
                   calib: np.ndarray | None, float_groups: list[str], finish) -> Path:
    """Convert into a temporary folder, let `finish(tmp, converted)` write the manifest, then
    rename the temporary folder to `folder` (an existing artifact there is replaced; anything
    else there is refused, `check_replaceable`)."""
    check_request(target, precision)
    if precision == "int8" and (calib is None or len(calib) == 0):
        raise UserError("int8 needs calibration faces: pass --calib DIR")
    folder = Path(folder)
    check_replaceable(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(folder)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        module = importlib.import_module(f".{target}", __package__)
        converted = module.export(model, tmp, precision, calib, float_groups)
        finish(tmp, converted)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


def check_replaceable(folder: Path) -> None:
    """An export replaces only an artifact: a folder holding a lafs-edge manifest.json. Any
    other file or folder at that name (someone's work under a clashing --name) is refused."""
    if not (folder.exists() or folder.is_symlink()):
        return
    from lafs_edge.runtime.manifest import FORMAT

    manifest = folder / "manifest.json"
    try:
        ours = (folder.is_dir() and not folder.is_symlink()
                and json.loads(manifest.read_text()).get("format") == FORMAT)
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UserError(f"{folder} exists and is not a lafs-edge artifact (no manifest.json of "
                        "ours in it); an export replaces only its own artifacts: choose another "
                        "--name or --out, or move it away")


def remove_stale_folders(folder: Path) -> list[Path]:
    """`.NAME.tmpPID` / `.NAME.oldPID` folders beside `folder` left by an export that was killed
    (SIGKILL, power loss): their process is gone, so nothing else will remove them."""
    from lafs_edge.gallery.files import glob_escape, process_alive

    pattern = re.compile(rf"\.{re.escape(folder.name)}\.(?:tmp|old)(\d+)")
    removed = []
    for candidate in folder.parent.glob(f".{glob_escape(folder.name)}.*"):
        match = pattern.fullmatch(candidate.name)
        if match and candidate.is_dir() and not process_alive(int(match.group(1))):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def load_source(model_arg: str, overrides: dict[str, Any] | None = None, seed: int = 0,
                random_init: bool = False) -> tuple[FaceModel, dict[str, Any], str | None]:
    """MODEL (checkpoint path or registry name) -> (model, source record, checkpoint path).

    A registry name means its shipped weights, as `--model NAME` does everywhere. With
    `random_init` it means random weights drawn after `torch.manual_seed(seed)` (tests, size and
    latency checks), recorded so that `verify` and `bench` can rebuild the very same model."""
    from lafs_edge.models import list_models, load_model
    from lafs_edge.models.pretrained import shipped, weights_file

    overrides = dict(overrides or {})
    if model_arg in list_models() and not random_init:
        if model_arg not in shipped():
            raise UserError(f"{model_arg} has no shipped weights (trained: "
                            f"{', '.join(sorted(shipped())) or 'none'}): pass a checkpoint, or "
                            "--random-init for random weights")
        if overrides:
            raise UserError(f"model.overrides change {model_arg}'s architecture, which its "
                            "shipped weights fix: add --random-init for a random-weights model")
        model_arg = str(weights_file(model_arg))
    elif model_arg in list_models():
        torch.manual_seed(seed)
        model = load_model(model_arg, **overrides)
        return model, {"registry": model_arg, "overrides": overrides, "seed": seed}, None
    path = Path(model_arg)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (or use a registry name: "
                        f"{', '.join(list_models())})")
    model = load_model(path, **overrides)
    return model, {"checkpoint": str(path.resolve()), "overrides": overrides}, str(path)


def load_recorded_source(manifest, model_arg: str | None = None) -> FaceModel:
    """The PyTorch model an artifact came from: `model_arg` if given, else the manifest's record.
    A checkpoint must match the manifest's source_checkpoint_sha256."""
    from lafs_edge.hashing import sha256_file

    record = manifest.parity.get("source") or {}
    if model_arg is None:
        if "registry" in record:
            return load_source(record["registry"], record.get("overrides"), record.get("seed", 0),
                               random_init=True)[0]
        model_arg = record.get("checkpoint")
        if model_arg is None:
            raise UserError("the manifest does not say which model it came from: pass --model")
    model, _, checkpoint = load_source(model_arg, record.get("overrides"))
    expected = manifest.source_checkpoint_sha256
    if checkpoint and expected and sha256_file(checkpoint) != expected:
        raise UserError(f"{checkpoint} is not the checkpoint this artifact was exported from "
                        "(sha256 differs from the manifest's source_checkpoint_sha256)")
    return model
