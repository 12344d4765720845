"""Fill an artifact's manifest.json: hashes, input spec, alignment, threshold, parity, versions."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from lafs_edge import __version__
from lafs_edge.align import ARCFACE_TEMPLATE_112
from lafs_edge.convert.export import Converted
from lafs_edge.runtime.backends import sha256_path
from lafs_edge.runtime.manifest import InputSpec, Manifest
from lafs_edge.hashing import sha256_file

# Converter packages per target (recorded with their versions; a runtime may need the same).
CONVERTERS = {
    "onnx": ("torch", "onnx", "onnxscript"),
    "openvino": ("torch", "openvino", "nncf"),
    "tflite": ("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert", "torchao"),
    "coreml": ("torch", "coremltools"),
    "pytorch": ("torch",),
}
FAR = 1e-3


def converter_versions(target: str) -> dict[str, str]:
    versions = {}
    for package in CONVERTERS[target]:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def make_manifest(name: str, target: str, precision: str, folder: Path, converted: Converted,
                  embedding_dim: int, source_checkpoint: str | None,
                  extra_parity: dict[str, Any] | None = None) -> Manifest:
    """The manifest of a freshly converted artifact in `folder` (threshold and parity come later)."""
    size = int(converted.input_shape[2] if converted.layout == "NCHW" else converted.input_shape[1])
    template = ARCFACE_TEMPLATE_112 * (size / 112.0)
    weights = converted.weights_file
    parity: dict[str, Any] = {"kept_float": converted.kept_float, **(extra_parity or {})}
    if converted.details:
        parity["converter_details"] = converted.details
    return Manifest(
        name=name, target=target, precision=precision, version=__version__,
        model_file=converted.model_file, model_sha256=sha256_path(folder / converted.model_file),
        weights_file=weights, weights_sha256=sha256_file(folder / weights) if weights else None,
        source_checkpoint_sha256=(sha256_file(source_checkpoint) if source_checkpoint else None),
        input=InputSpec(shape=[int(v) for v in converted.input_shape], layout=converted.layout),
        output={"name": "embedding"},
        alignment={"template": np.round(template, 4).tolist(), "crop_size": [size, size]},
        embedding_dim=int(embedding_dim), parity=parity, converters=converter_versions(target))


def threshold_at_far(embeddings: np.ndarray, labels: np.ndarray, far: float = FAR) -> float:
    """Cosine threshold whose false-accept rate over every impostor pair is <= `far`: the lowest
    ROC threshold that keeps it there. Pairs with tied scores are accepted together, so when a
    tie straddles `far` the threshold stays above it (the FAR is never exceeded)."""
    from lafs_edge.verification import pair_scores, roc_curve

    normalised = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    i, j = np.triu_indices(len(labels), k=1)
    fpr, _, thresholds = roc_curve(pair_scores(normalised, i, j), labels[i] == labels[j])
    return float(thresholds[fpr <= far][-1])
