"""Distillation teachers: any project checkpoint, an exported artifact (manifest.json), or an
external ONNX / OpenVINO face model described by a small YAML:

    name: face-reidentification-retail-0095
    runtime: openvino                # openvino | onnx
    model: FP16/face-reidentification-retail-0095.xml   # relative to the YAML (or absolute)
    input: {width: 128, height: 128, color: BGR, mean: [0, 0, 0], std: [1, 1, 1], batch: 1}
    alignment:                       # 5 points (left eye, right eye, nose, mouth L, mouth R)
      template: [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                 [33.5493, 92.3655], [62.7299, 92.2041]]
      template_size: [96, 112]       # the size the points are given for; scaled to the input
    embedding_dim: 256

Every teacher embeds batches of views given as float tensors (B, 3, H, W) in [-1, 1] RGB, of
the crop its `template` and `crop_size` describe (the student's 112x112 ArcFace crop for
project models), and returns float32 (B, D) on the training device, not normalised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from lafs_edge.align import ARCFACE_TEMPLATE_112, CROP_SIZE, template_for
from lafs_edge.errors import UserError

if TYPE_CHECKING:
    from lafs_edge.models import PartViT

EXTERNAL_RUNTIMES = {"openvino": "openvino", "onnx": "onnxruntime"}  # runtime -> backend module


@dataclass
class TeacherGeometry:
    """The crop a teacher expects: its 5-point template and (width, height)."""
    template: np.ndarray
    crop_size: tuple[int, int]

    @property
    def is_student_crop(self) -> bool:
        return self.crop_size == (CROP_SIZE, CROP_SIZE) and \
            np.allclose(self.template, ARCFACE_TEMPLATE_112, atol=1e-3)


class CheckpointTeacher:
    """A project model (`load_model`), frozen, on the training device; a part fViT also gives
    its landmarks (for landmark distillation)."""

    def __init__(self, path: str | os.PathLike, device: torch.device):
        from lafs_edge.models import PartViT, load_model

        self.model = load_model(path).to(device).eval().requires_grad_(False)
        self.name = f"{self.model.arch} ({Path(path).name})"
        self.embedding_dim = int(self.model.embedding_dim)
        self.has_landmarks = isinstance(self.model, PartViT)
        self.geometry = TeacherGeometry(ARCFACE_TEMPLATE_112, (CROP_SIZE, CROP_SIZE))

    @torch.no_grad()
    def __call__(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (embeddings (B, D), landmarks (B, N, 2) pixels or None)."""
        if self.has_landmarks:
            emb, points, _ = cast("PartViT", self.model).forward_with_landmarks(views)
            return emb.float(), points.float()
        return self.model(views).float(), None


class RuntimeTeacher:
    """An external or exported model run by the project's runtimes (OpenVINO, ONNX Runtime...)
    on the CPU: preprocessing (colour order, mean/std, layout) comes from its manifest."""

    has_landmarks = False

    def __init__(self, runtime, device: torch.device):
        from lafs_edge.runtime.embedder import Embedder

        self.embedder = Embedder(runtime)
        self.name = self.embedder.name
        self.embedding_dim = self.embedder.embedding_dim
        self.device = device
        self.geometry = TeacherGeometry(self.embedder.template, tuple(self.embedder.crop_size))

    @torch.no_grad()
    def __call__(self, views: torch.Tensor) -> tuple[torch.Tensor, None]:
        pixels = ((views.float().clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).cpu().numpy()
        raw = self.embedder.runtime.run(self.embedder.preprocess(pixels))
        return torch.from_numpy(raw).to(self.device), None


def teacher_kind(spec: str | os.PathLike) -> str:
    """"yaml" (an external model's description), "artifact" (an exported folder or its
    manifest.json) or "checkpoint" (a project model.pt): how `spec` is loaded."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        return "yaml"
    return "artifact" if path.is_dir() or path.name == "manifest.json" else "checkpoint"


def load_teacher(spec: str | os.PathLike, device: torch.device, threads: int | None = None):
    """A `.pt` checkpoint, an artifact folder / manifest.json, or a teacher YAML. `threads`: CPU
    threads of a runtime teacher (None: all; a data loader worker's teacher takes one)."""
    path = Path(spec)
    if not path.exists():
        raise UserError(f"distill.teacher not found: {spec}")
    kind = teacher_kind(path)
    if kind == "yaml":
        return RuntimeTeacher(external_runtime(path, threads), device)
    if kind == "artifact":
        from lafs_edge.runtime.backends import open_runtime

        return RuntimeTeacher(open_runtime(path, threads), device)
    return CheckpointTeacher(path, device)


def teacher_geometry(spec: str | os.PathLike) -> TeacherGeometry:
    """The teacher's crop without loading its weights (the data workers need it)."""
    path, kind = Path(spec), teacher_kind(spec)
    if kind == "yaml":
        desc = read_teacher_yaml(path)
        return TeacherGeometry(desc["template"], (desc["width"], desc["height"]))
    if kind == "artifact":
        from lafs_edge.runtime.manifest import read_manifest

        manifest, _ = read_manifest(path)
        shape = manifest.input.shape
        h, w = (shape[2], shape[3]) if manifest.input.layout == "NCHW" else (shape[1], shape[2])
        alignment = manifest.alignment or {}
        size = cast(tuple[int, int], tuple(int(v) for v in alignment.get("crop_size", (w, h))))
        template = alignment.get("template")
        template = np.asarray(template, np.float64) if template is not None else template_for(*size)
        return TeacherGeometry(template, size)
    return TeacherGeometry(ARCFACE_TEMPLATE_112, (CROP_SIZE, CROP_SIZE))


def read_teacher_yaml(path: Path) -> dict[str, Any]:
    """Validated description of an external teacher (see the module docstring)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        inp, align = raw["input"], raw["alignment"]
        width, height = int(inp["width"]), int(inp["height"])
        base = align.get("template_size", [width, height])
        template = template_for(width, height, np.asarray(align["template"], np.float64),
                                (float(base[0]), float(base[1])))
        desc = {"name": str(raw.get("name", path.stem)), "runtime": str(raw["runtime"]),
                "model": resolve_model_path(path, str(raw["model"])), "width": width,
                "height": height, "color": str(inp.get("color", "RGB")).upper(),
                "mean": [float(v) for v in inp.get("mean", [127.5] * 3)],
                "std": [float(v) for v in inp.get("std", [127.5] * 3)],
                "batch": int(inp.get("batch", -1)), "template": template,
                "embedding_dim": int(raw["embedding_dim"])}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: not a teacher description ({type(e).__name__}: {e}); see "
                        "lafs_edge.train.teachers for the keys") from None
    if desc["runtime"] not in EXTERNAL_RUNTIMES:
        raise UserError(f"{path}: runtime must be one of {sorted(EXTERNAL_RUNTIMES)}")
    if desc["color"] not in ("RGB", "BGR") or template.shape != (5, 2):
        raise UserError(f"{path}: input.color must be RGB or BGR and alignment.template 5 [x, y]")
    return desc


def resolve_model_path(yaml_path: Path, model: str) -> Path:
    """Absolute, or relative to the YAML's folder, or relative to the working directory."""
    for candidate in (Path(model), yaml_path.parent / model, Path.cwd() / model):
        if candidate.is_file():
            return candidate.resolve()
    raise UserError(f"{yaml_path}: model file {model} not found (absolute, next to the YAML, or "
                    "relative to the working directory)")


def external_runtime(path: Path, threads: int | None = None):
    """Load the model a teacher YAML describes through the project's runtime backends."""
    import importlib

    from lafs_edge.runtime.backends import Runtime
    from lafs_edge.runtime.manifest import InputSpec, Manifest

    desc = read_teacher_yaml(path)
    model = desc["model"]
    weights = model.with_suffix(".bin") if desc["runtime"] == "openvino" else None
    if weights is not None and not weights.is_file():
        raise UserError(f"{path}: OpenVINO weights {weights} not found next to {model.name}")
    manifest = Manifest(
        name=desc["name"], target=desc["runtime"], model_file=str(model), model_sha256="",
        weights_file=str(weights) if weights else None,
        input=InputSpec(shape=[desc["batch"], 3, desc["height"], desc["width"]], layout="NCHW",
                        color=desc["color"], mean=desc["mean"], std=desc["std"]),
        alignment={"template": desc["template"].tolist(),
                   "crop_size": [desc["width"], desc["height"]]},
        embedding_dim=desc["embedding_dim"], precision="fp32", version="external")
    backend = importlib.import_module(f"lafs_edge.runtime.{EXTERNAL_RUNTIMES[desc['runtime']]}")
    return Runtime(manifest, model.parent, backend.load(model, manifest, threads), threads)
