"""`manifest.json`: everything a runtime needs to use an exported model, and nothing else.

Written by `lafs-edge export` next to every artifact (and by hand for external models), read by
the Embedder. Schema (format "lafs-edge-artifact/1"):

    name, version            model name, lafs-edge version that wrote it
    target                   onnx | openvino | tflite | coreml | pytorch
    model_file               path relative to the manifest (e.g. "model.xml")
    model_sha256             sha256 of model_file (checked at load)
    weights_file             optional second file (OpenVINO .bin), with weights_sha256
    source_checkpoint_sha256 sha256 of the PyTorch checkpoint it came from (null: registry weights)
    input   {name, shape, layout NCHW|NHWC, color RGB|BGR, mean [3], std [3], dtype}
            model input = (pixel - mean) / std, pixels 0-255 in `color` order
    output  {name}
    alignment {template [[x, y] x5], crop_size [w, h]}
    embedding_dim, precision (fp32|fp16|int8), threshold (cosine, FAR 1e-3; null if unknown)
    parity  {...figures from `lafs-edge verify`}, converters {package: version}
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import write_text_atomic

FORMAT = "lafs-edge-artifact/1"
TARGETS = ("onnx", "openvino", "tflite", "coreml", "pytorch")


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
        return manifest


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
