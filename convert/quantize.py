"""int8 sensitivity: which parts of a model may be quantized without collapsing its embeddings.

Simulated int8 with torchao's affine quantization primitives, the scheme the backends use:
weights per output channel, symmetric int8; activations per tensor, asymmetric int8, ranges
(min/max) calibrated on real aligned faces. Groups are module paths of the wrapped export model
(`ExportModel`): for part fViT the landmark CNN trunk, the landmark head (the coordinates), the
patch sampler, the patch embedding, every block and the final LayerNorm; for MobileFaceNet every
stage. Each group is quantized alone and the mean cosine to the float model measured; a group
whose drop exceeds `tolerance` stays float, and then the most sensitive remaining groups too
until the simulated int8 model reaches TARGET_COSINE; those groups stay float in the real int8
export (OpenVINO ignored scope, LiteRT PT2E module filter).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lafs_edge.convert.export import ExportModel, PatchSampler
from lafs_edge.models import FaceModel, PartViT

TOLERANCE = 0.002  # largest mean-cosine drop one group may cost
TARGET_COSINE = 0.995  # simulated int8 model vs float, on the calibration faces (margin over 0.99)
QUANTIZED_TYPES = (nn.Conv2d, nn.Linear, nn.LayerNorm, PatchSampler)


@dataclass
class Sensitivity:
    drops: dict[str, float]  # group -> mean cosine drop when only it is int8
    float_groups: list[str]  # groups that stay float
    all_int8_cosine: float  # every group int8
    mixed_cosine: float  # float_groups float, the rest int8
    torchao_dynamic_cosine: float | None = None  # torchao int8 dynamic Linear layers (PyTorch-side)
    tolerance: float = TOLERANCE
    faces: int = 0
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"drops": {k: round(v, 6) for k, v in self.drops.items()},
                "float_groups": self.float_groups, "all_int8_cosine": round(self.all_int8_cosine, 6),
                "mixed_cosine": round(self.mixed_cosine, 6), "tolerance": self.tolerance,
                "torchao_dynamic_cosine": (None if self.torchao_dynamic_cosine is None
                                           else round(self.torchao_dynamic_cosine, 6)),
                "faces": self.faces}


def quant_groups(wrapped: ExportModel) -> dict[str, list[str]]:
    """group label -> module paths (prefixes) in the wrapped model."""
    model = wrapped.model
    if isinstance(model, PartViT):
        names = ["model.landmarks.trunk", "model.landmarks.head", "sampler", "model.patch_embed",
                 *[f"model.blocks.{i}" for i in range(len(model.blocks))], "model.norm"]
        return {name: [name] for name in names}
    # MobileFaceNet: the stem, each stage of bottlenecks, the 512-channel conv, GDC, embedding.
    from lafs_edge.models.cnn_student import STAGES

    groups = {"stem": ["model.features.0", "model.features.1"]}
    index = 2
    for number, (_, _, repeats, _) in enumerate(STAGES, 1):
        groups[f"stage{number}"] = [f"model.features.{i}" for i in range(index, index + repeats)]
        index += repeats
    groups["conv512"] = [f"model.features.{index}"]
    return {**groups, "gdc": ["model.gdc"], "embed": ["model.embed"]}


# Always float in part fViT int8 exports, whatever the measurement: the patch sampler and the ops
# directly in the landmark CNN (the min-max rescale to pixel coordinates). They hold no weights
# and cost almost nothing, while int8 there moves patches (a coordinate step of 111/255 px) and
# PT2E cannot even observe their integer index arithmetic. "path$" = that module's own ops only.
ALWAYS_FLOAT_PART_VIT = ["sampler", "model.landmarks$"]


def float_paths(wrapped: ExportModel, labels: list[str]) -> list[str]:
    """Module paths a backend must leave float: the chosen groups plus the always-float ops."""
    groups = quant_groups(wrapped)
    paths = [path for label in labels for path in groups[label]]
    return paths + (ALWAYS_FLOAT_PART_VIT if wrapped.is_part_vit else [])


def choose_float_groups(model: FaceModel, calib: np.ndarray, tolerance: float = TOLERANCE,
                        with_torchao: bool = False) -> Sensitivity:
    """Measure every group's sensitivity on `calib` (float32 NCHW faces) and pick the float ones."""
    wrapped = ExportModel(model, "NCHW")
    images = torch.from_numpy(np.ascontiguousarray(calib, dtype=np.float32))
    groups = quant_groups(wrapped)
    with torch.inference_mode():
        reference = wrapped(images)
        ranges = observe_ranges(wrapped, images)
        drops = {label: 1 - cosine(simulate(wrapped, images, paths, ranges), reference)
                 for label, paths in groups.items()}
        all_int8 = cosine(simulate(wrapped, images, sum(groups.values(), []), ranges), reference)
        float_groups = [g for g in groups if drops[g] > tolerance]
        mixed = _mixed_cosine(wrapped, images, groups, float_groups, ranges, reference)
        # Small drops add up: keep the next most sensitive group float until the whole model
        # meets the target (or nothing is left to quantize).
        for group in sorted(groups, key=drops.__getitem__, reverse=True):
            if mixed >= TARGET_COSINE:
                break
            if group not in float_groups:
                float_groups.append(group)
                mixed = _mixed_cosine(wrapped, images, groups, float_groups, ranges, reference)
    result = Sensitivity(drops, float_groups, all_int8, mixed, tolerance=tolerance, faces=len(calib))
    if with_torchao:
        result.torchao_dynamic_cosine = torchao_dynamic_cosine(model, images, reference)
    return result


def _mixed_cosine(wrapped, images, groups, float_groups, ranges, reference) -> float:
    quantized = [path for g, paths in groups.items() if g not in float_groups for path in paths]
    return cosine(simulate(wrapped, images, quantized, ranges), reference)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b, dim=1).mean().item()


def _modules_in(wrapped: nn.Module, groups: list[str]):
    for name, module in wrapped.named_modules():
        if isinstance(module, QUANTIZED_TYPES) and any(name == g or name.startswith(g + ".")
                                                       for g in groups):
            yield name, module


def observe_ranges(wrapped: nn.Module, images: torch.Tensor) -> dict[str, list[tuple[float, float]]]:
    """min/max of every tensor input of every quantizable module over the calibration faces."""
    ranges: dict[str, list[tuple[float, float]]] = {}

    def hook(name):
        def record(module, inputs):
            ranges[name] = [(t.min().item(), t.max().item()) for t in inputs]
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in wrapped.named_modules()
               if isinstance(m, QUANTIZED_TYPES)]
    try:
        wrapped(images)
    finally:
        for h in handles:
            h.remove()
    return ranges


def fake_quant_activation(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Per-tensor asymmetric int8 with a calibrated range (what static PTQ does)."""
    from torchao.quantization.quant_primitives import dequantize_affine, quantize_affine

    low, high = min(low, 0.0), max(high, 0.0)  # zero must be exact
    scale = torch.tensor([max(high - low, 1e-8) / 255.0])
    zero = torch.tensor([int(round(-128 - low / scale.item()))], dtype=torch.int32)
    q = quantize_affine(x, tuple(x.shape), scale, zero, torch.int8, -128, 127)
    return dequantize_affine(q, tuple(x.shape), scale, zero, torch.int8, -128, 127)


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8."""
    from torchao.quantization.quant_primitives import (MappingType, choose_qparams_affine,
                                                       dequantize_affine, quantize_affine)

    block = (1, *w.shape[1:])
    scale, zero = choose_qparams_affine(w, MappingType.SYMMETRIC, block, torch.int8, -127, 127)
    q = quantize_affine(w, block, scale, zero, torch.int8, -127, 127)
    return dequantize_affine(q, block, scale, zero, torch.int8, -127, 127)


def simulate(wrapped: nn.Module, images: torch.Tensor, groups: list[str],
             ranges: dict[str, list[tuple[float, float]]]) -> torch.Tensor:
    """Forward pass with `groups` in simulated int8 (weights and inputs), the rest float."""
    with contextlib.ExitStack() as stack:
        for name, module in _modules_in(wrapped, groups):
            stack.enter_context(_quantized(module, ranges[name]))
        return wrapped(images)


@contextlib.contextmanager
def _quantized(module: nn.Module, input_ranges: list[tuple[float, float]]):
    original = None
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        original = module.weight.data
        module.weight.data = fake_quant_weight(original)

    def quantize_inputs(_, inputs):
        return tuple(fake_quant_activation(t, *r) for t, r in zip(inputs, input_ranges))

    handle = module.register_forward_pre_hook(quantize_inputs)
    try:
        yield
    finally:
        handle.remove()
        if original is not None:
            module.weight.data = original


def torchao_dynamic_cosine(model: FaceModel, images: torch.Tensor, reference: torch.Tensor) -> float:
    """PyTorch-side int8 with torchao: every nn.Linear int8 (dynamic per-token activations,
    per-channel weights); convolutions stay float (torchao's CPU int8 path covers Linear)."""
    import copy

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantized = copy.deepcopy(model).eval()
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    with torch.inference_mode():
        return cosine(ExportModel(quantized, "NCHW")(images), reference)
