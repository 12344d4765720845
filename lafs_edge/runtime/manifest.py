"""`manifest.json`: everything a runtime needs to use an exported model, and nothing else.

Written by `lafs-edge export` next to every artifact (and by hand for external models), read by
the Embedder. Schema (format "lafs-edge-artifact/1"):

    name, version            model name, lafs-edge version that wrote it
    target                   onnx | openvino | tflite | coreml | pytorch
    model_file               file name inside the artifact folder (e.g. "model.xml"): never an
                             absolute path, `..` or a link leaving the folder (refused at load)
    model_sha256             sha256 of model_file (required, checked at load)
    weights_file             optional second file (OpenVINO .bin), with weights_sha256 (required)
    source_checkpoint_sha256 sha256 of the PyTorch checkpoint it came from (null: registry weights)
    input   {name, shape, layout NCHW|NHWC, color RGB|BGR, mean [3], std [3], dtype}
            model input = (pixel - mean) / std, pixels 0-255 in `color` order
    output  {name}
    alignment {template [[x, y] x5], crop_size [w, h]}: five distinct, finite points inside the
            crop, not on one line (a degenerate template maps every face to the same crop)
    embedding_dim, precision (fp32|fp16|int8), threshold (cosine, FAR 1e-3; null if unknown)
    parity  {...figures from `lafs-edge verify`}, converters {package: version}
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lafs_edge.errors import UserError
from lafs_edge.fileio import write_text_atomic

FORMAT = "lafs-edge-artifact/1"
TARGETS = ("onnx", "openvino", "tflite", "coreml", "pytorch")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class InputSpec:
    shape: list[int]
    name: str = "images"
    layout: str = "NCHW"
    color: str = "RGB"
    mean: list[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    std: list[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    dtype: str = "float32"


@dataclass
class Manifest:
    name: str
    target: str
    model_file: str
    model_sha256: str
    input: InputSpec
    alignment: dict[str, Any]
    embedding_dim: int
    precision: str = "fp32"
    version: str = ""
    output: dict[str, Any] = field(default_factory=lambda: {"name": "embedding"})
    weights_file: str | None = None
    weights_sha256: str | None = None
    source_checkpoint_sha256: str | None = None
    threshold: float | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    converters: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        try:
            fields = dict(data)
            fields["input"] = InputSpec(**fields["input"])
            manifest = cls(**fields)
        except (KeyError, TypeError) as e:
            raise UserError(f"manifest is missing or has unknown fields: {e}") from None
        if manifest.format != FORMAT:
            raise UserError(f"unsupported manifest format {manifest.format!r} (want {FORMAT})")
        if manifest.target not in TARGETS:
            raise UserError(f"unknown target {manifest.target!r} in manifest; one of {TARGETS}")
        if manifest.input.layout not in ("NCHW", "NHWC") or manifest.input.color not in ("RGB", "BGR"):
            raise UserError("manifest input.layout must be NCHW|NHWC and input.color RGB|BGR")
        _check_files(manifest)
        _check_numbers(manifest)
        _check_alignment(manifest.alignment)
        return manifest


def _check_files(manifest: Manifest) -> None:
    """File names and their hashes. A blank hash would turn the load-time integrity check off,
    and the gallery fingerprint derives from these files, so both are required."""
    files: list[tuple[str, str, str | None]] = [("model", manifest.model_file, manifest.model_sha256)]
    if manifest.weights_file is not None:
        files.append(("weights", manifest.weights_file, manifest.weights_sha256))
    for kind, name, digest in files:
        if not isinstance(name, str) or not name:
            raise UserError(f"manifest {kind}_file must be a file name, got {name!r}")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest.lower()):
            raise UserError(f"manifest {kind}_sha256 must be the sha256 of {name} (64 hex "
                            f"digits), got {digest!r}; re-export the model, or compute it with "
                            "`sha256sum`")
    manifest.model_sha256 = manifest.model_sha256.lower()
    if manifest.weights_sha256:
        manifest.weights_sha256 = manifest.weights_sha256.lower()


def _check_numbers(manifest: Manifest) -> None:
    spec = manifest.input
    if not _is_int(manifest.embedding_dim) or manifest.embedding_dim < 1:
        raise UserError(f"manifest embedding_dim must be a positive integer, got "
                        f"{manifest.embedding_dim!r}")
    threshold = manifest.threshold
    if threshold is not None and not (_is_real(threshold) and -1 <= threshold <= 1):
        raise UserError(f"manifest threshold must be a cosine in [-1, 1] or null, got {threshold!r}")
    if not isinstance(spec.shape, list) or len(spec.shape) != 4 or not all(map(_is_int, spec.shape)):
        raise UserError(f"manifest input.shape must be 4 integers, got {spec.shape!r}")
    for key in ("mean", "std"):
        values = getattr(spec, key)
        if not isinstance(values, list) or len(values) != 3 or not all(map(_is_real, values)):
            raise UserError(f"manifest input.{key} must be 3 numbers, got {values!r}")
    if any(value == 0 for value in spec.std):
        raise UserError(f"manifest input.std must not contain 0, got {spec.std!r}")


MIN_TEMPLATE_SPREAD = 2.0   # pixels: the template's points must span at least this in both axes


def _check_alignment(alignment) -> None:
    """The template's geometry: a similarity transform onto five equal points (or points on a
    line) sends every face to nearly the same crop, so every stranger matches everyone."""
    if not isinstance(alignment, dict):
        raise UserError(f"manifest alignment must be an object, got {alignment!r}")
    template, crop = alignment.get("template"), alignment.get("crop_size")
    if crop is not None and not (isinstance(crop, list) and len(crop) == 2
                                 and all(_is_int(v) and v > 0 for v in crop)):
        raise UserError(f"manifest alignment.crop_size must be 2 positive integers, got {crop!r}")
    if template is None:
        return
    if not (isinstance(template, list) and len(template) == 5 and all(
            isinstance(p, list) and len(p) == 2 and all(map(_is_real, p)) for p in template)):
        raise UserError("manifest alignment.template must be 5 [x, y] points of finite numbers")
    check_template(template, tuple(crop) if crop else None)


def check_template(template, crop: tuple[int, int] | None) -> None:
    """Five distinct points, spread in both directions, inside the crop when its size is known."""
    import numpy as np

    points = np.asarray(template, np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise UserError("manifest alignment.template must be 5 [x, y] points of finite numbers")
    gaps = np.linalg.norm(points[:, None] - points[None], axis=-1)[np.triu_indices(5, 1)]
    spread = np.linalg.svd(points - points.mean(0), compute_uv=False)
    if gaps.min() < 1.0 or spread.min() < MIN_TEMPLATE_SPREAD:
        raise UserError(f"manifest alignment.template is degenerate (points {points.tolist()}): "
                        "the five landmarks (eyes, nose, mouth corners) must be distinct and not "
                        "on one line")
    if crop is not None and (points.min() < 0 or np.any(points.max(0) > np.asarray(crop))):
        raise UserError(f"manifest alignment.template has points outside the {crop[0]}x{crop[1]} "
                        "crop")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_manifest(path: str | os.PathLike) -> tuple[Manifest, Path]:
    """`path` is an artifact folder or its manifest.json -> (manifest, folder)."""
    path = Path(path)
    file = path / "manifest.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"no manifest.json at {path} (export the model with `lafs-edge export`)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{file} is not a manifest (a JSON object)")
    manifest = Manifest.from_dict(data)
    for name in (manifest.model_file, manifest.weights_file):
        if name is not None:
            confined(file.parent, name)
    return manifest, file.parent


def confined(folder: Path, name: str) -> Path:
    """`folder / name`, refused unless it stays inside the folder: a manifest (which anyone
    can hand over with an artifact) must not make the runtime read /etc/passwd or another
    user's files, through `..`, an absolute path or a symbolic link."""
    relative = Path(name)
    inside = folder.resolve()
    path = (folder / relative).resolve()
    if relative.is_absolute() or ".." in relative.parts or not path.is_relative_to(inside):
        raise UserError(f"manifest file {name!r} is outside the artifact folder {folder}; model "
                        "files must be inside it (for an external model, rerun "
                        "`lafs-edge manifest-external`, which copies them in)")
    return path


def write_manifest(manifest: Manifest, folder: str | os.PathLike) -> Path:
    """Check the manifest as a reader will (a NaN threshold is refused here, not at first
    use), bring model files named by absolute path into the folder (read_manifest accepts
    only files inside it), then write manifest.json atomically."""
    folder = Path(folder)
    manifest = replace(manifest)   # the caller's object keeps its paths
    for attribute in ("model_file", "weights_file"):
        name = getattr(manifest, attribute)
        if name is not None and Path(name).is_absolute():
            setattr(manifest, attribute, _copy_into(Path(name), folder))
    data = manifest.to_dict()
    Manifest.from_dict(json.loads(json.dumps(data)))
    file = folder / "manifest.json"
    write_text_atomic(file, json.dumps(data, indent=2) + "\n")
    return file


def _copy_into(source: Path, folder: Path) -> str:
    import shutil

    target = folder / source.name
    folder.mkdir(parents=True, exist_ok=True)
    if not (target.exists() and os.path.samefile(source, target)):
        copy = shutil.copytree if source.is_dir() else shutil.copyfile
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        copy(source, tmp)
        os.replace(tmp, target)
    return source.name
