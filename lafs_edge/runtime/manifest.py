"""`manifest.json`: everything a runtime needs to use an exported model, and nothing else.

Written by `lafs-edge export` next to every artifact (and by hand for external models), read by
the Embedder. Schema (format "lafs-edge-artifact/1"):

    name, version            model name, lafs-edge version that wrote it
    target                   onnx | openvino | tflite | coreml | pytorch
    model_file               path relative to the manifest (e.g. "model.xml")
    model_sha256             sha256 of model_file (required, checked at load)
    weights_file             optional second file (OpenVINO .bin), with weights_sha256 (required)
    source_checkpoint_sha256 sha256 of the PyTorch checkpoint it came from (null: registry weights)
    input   {name, shape, layout NCHW|NHWC, color RGB|BGR, mean [3], std [3], dtype}
            model input = (pixel - mean) / std, pixels 0-255 in `color` order
    output  {name}
    alignment {template [[x, y] x5], crop_size [w, h]}
    embedding_dim, precision (fp32|fp16|int8), threshold (cosine, FAR 1e-3; null if unknown)
    parity  {...figures from `lafs-edge verify`}, converters {package: version}
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file} is not valid JSON: {e}") from None
    return Manifest.from_dict(data), file.parent


def write_manifest(manifest: Manifest, folder: str | os.PathLike) -> Path:
    file = Path(folder) / "manifest.json"
    write_text_atomic(file, json.dumps(manifest.to_dict(), indent=2) + "\n")
    return file
