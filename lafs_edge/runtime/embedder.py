"""`Embedder.from_artifact(path)`: faces in, L2-normalised embeddings out, on any runtime.

Everything model-specific comes from the artifact's manifest.json: the runtime (OpenVINO, LiteRT,
ONNX Runtime, Core ML, PyTorch, via `open_runtime`), the alignment template and crop size, the
colour order, mean/std and layout. So a project model and an external one (with a hand-written
manifest, see `external_manifest`) are used the same way:

    embedder = Embedder.from_artifact("artifacts/mobilefacenet-openvino")
    vectors = embedder.embed(image_rgb, [face.points5 for face in faces])   # one batch

`fingerprint` names the model and its preprocessing; a gallery stores it with every embedding so
vectors from different models are never compared. It is computed from the hashes of the model
files themselves, not from what the manifest says about them.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from functools import cached_property
from pathlib import Path

import numpy as np

from lafs_edge.align import align_face, template_for
from lafs_edge.errors import UserError
from lafs_edge.hashing import sha256_file
from lafs_edge.runtime.manifest import InputSpec, Manifest, check_template


class Embedder:
    def __init__(self, runtime):
        self.runtime = runtime
        self.manifest: Manifest = runtime.manifest
        spec = self.manifest.input
        height, width = _input_hw(spec)
        alignment = self.manifest.alignment or {}
        self.crop_size = tuple(int(v) for v in alignment.get("crop_size", (width, height)))
        if self.crop_size != (width, height):
            raise UserError(f"manifest alignment.crop_size {list(self.crop_size)} does not match "
                            f"the model input {width}x{height}")
        template = alignment.get("template")
        self.template = (np.asarray(template, np.float64) if template is not None
                         else template_for(width, height))
        if self.template.shape != (5, 2):
            raise UserError(f"manifest alignment.template must be 5 [x, y] points, got "
                            f"shape {self.template.shape}")
        check_template(self.template, self.crop_size)
        self._mean = np.asarray(spec.mean, np.float32)
        self._std = np.asarray(spec.std, np.float32)
        self.timings = {"align": 0.0, "embed": 0.0}

    @classmethod
    def from_artifact(cls, path: str | os.PathLike, threads: int | None = None) -> "Embedder":
        from lafs_edge.runtime.backends import open_runtime

        try:
            return cls(open_runtime(path, threads=threads))
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - each runtime raises its own types for a bad file
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"cannot load the model of {path}: its runtime rejected the file "
                            f"({first_line})") from None

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest.embedding_dim)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def label(self) -> str:
        """Name and precision, for messages (the fingerprint is what tells models apart)."""
        return f"{self.manifest.name} ({self.manifest.precision})"

    @property
    def threshold(self) -> float | None:
        return self.manifest.threshold

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the model (and weights) files' hashes, the embedding size and the
        preprocessing: the same file fed differently gives different vectors, so that counts too.
        The hashes are those of the files on disk, so two models can never share a fingerprint
        through what their manifests claim."""
        m = self.manifest
        model_sha256, weights_sha256 = self.file_hashes()
        identity = {"model_sha256": model_sha256, "weights_sha256": weights_sha256,
                    "embedding_dim": m.embedding_dim, "color": m.input.color,
                    "mean": list(m.input.mean), "std": list(m.input.std),
                    "template": np.round(self.template, 4).tolist(), "crop": list(self.crop_size)}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def file_hashes(self) -> tuple[str, str | None]:
        """sha256 of the model file (or Core ML folder) and of the weights file, if any."""
        from lafs_edge.runtime.backends import sha256_path

        folder, m = Path(self.runtime.folder), self.manifest
        weights = sha256_file(folder / m.weights_file) if m.weights_file else None
        return sha256_path(folder / m.model_file), weights

    def align(self, image: np.ndarray, points5: list[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """RGB uint8 image + one (5, 2) point set per face -> aligned RGB crops for this model."""
        start = time.perf_counter()
        width, height = self.crop_size
        crops = [align_face(image, points, size=height, crop_width=width, template=self.template)
                 for points in points5]
        self.timings["align"] = (time.perf_counter() - start) * 1e3
        return crops

    def preprocess(self, crops: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Aligned RGB uint8 crops (B, H, W, 3) -> the model's input batch."""
        batch = np.asarray(np.stack(crops) if isinstance(crops, list) else crops)
        if batch.ndim == 3:
            batch = batch[None]
        expected = (self.crop_size[1], self.crop_size[0], 3)
        if batch.shape[1:] != expected:
            raise UserError(f"{self.name}: expected aligned crops of {expected}, got {batch.shape[1:]}")
        batch = batch.astype(np.float32)
        if self.manifest.input.color == "BGR":
            batch = batch[..., ::-1]
        batch = (batch - self._mean) / self._std
        if self.manifest.input.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch, dtype=np.float32)

    def features(self, crops: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Aligned crops -> (B, D) float32 as the model outputs them (not normalised; IJB
        scoring weighs by the norm), in one runtime call."""
        return self.runtime.run(self.preprocess(crops))

    def embed_crops(self, crops: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Aligned crops -> (B, D) float32, L2-normalised, in one runtime call."""
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        start = time.perf_counter()
        raw = self.features(crops)
        self.timings["embed"] = (time.perf_counter() - start) * 1e3
        check_finite_embeddings(raw, self.name)
        return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)

    def embed(self, image: np.ndarray, points5: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Every face of one frame (its 5 points each) -> (faces, D), one batch."""
        return self.embed_crops(self.align(image, points5))


def check_finite_embeddings(rows: np.ndarray, model: str) -> np.ndarray:
    """A NaN, infinite or zero embedding is an error wherever it appears: normalised, NaN
    compares false with every threshold (every face "unknown", or in an evaluation a perfect
    rank-1 through argmax of NaNs), and stored it poisons a gallery."""
    rows = np.asarray(rows)
    if not np.all(np.isfinite(rows)) or np.any(np.linalg.norm(rows, axis=-1) == 0):
        raise UserError(f"{model} returned a zero or non-finite (NaN/inf) embedding: its weights "
                        "or its input are broken")
    return rows


def _input_hw(spec: InputSpec) -> tuple[int, int]:
    shape = list(spec.shape)
    if len(shape) != 4:
        raise UserError(f"manifest input.shape must have 4 dimensions, got {shape}")
    height, width = (shape[2], shape[3]) if spec.layout == "NCHW" else (shape[1], shape[2])
    channels = shape[1] if spec.layout == "NCHW" else shape[3]
    if channels != 3:
        raise UserError(f"manifest input.shape {shape} has {channels} channels, expected 3 ({spec.layout})")
    return int(height), int(width)


# --- the external OpenVINO model of ../shared/models --------------------------------------------

RETAIL_0095 = "face-reidentification-retail-0095"
# Its README: the ArcFace template for a 96x112 crop, x scaled by 128/96 and y by 128/112.
RETAIL_0095_TEMPLATE_96x112 = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                                        [33.5493, 92.3655], [62.7299, 92.2041]])
# Open-set threshold: the cosine at a false-accept rate of 1e-4 per pair over 1.1M impostor pairs
# of 1,498 wild5/lfw_5590 faces (one photo per person, so every pair is two people; not a set used
# for identification figures), measured through this pipeline (detected points; FP16 0.435,
# FP16-INT8 0.430). FAR 1e-4 rather than the manifest schema's usual 1e-3 (0.35): a gallery query
# is compared with every enrolled shot, and at 0.35 a fifth of ORL's never-enrolled people were
# named (docs/device.md).
RETAIL_0095_THRESHOLD = 0.43


def external_manifest(model_xml: str | os.PathLike, precision: str | None = None,
                      threshold: float | None = RETAIL_0095_THRESHOLD) -> Manifest:
    """A manifest for face-reidentification-retail-0095 (OpenVINO IR: `.xml` + `.bin`).

    Input 1x3x128x128 BGR, raw 0-255 pixels (mean 0, std 1), 256-d output; the IR has a fixed
    batch of 1, which the runtime feeds in chunks. File paths are absolute, so the manifest can
    live anywhere (the model folder is never written to)."""
    xml = Path(model_xml).resolve()
    weights = xml.with_suffix(".bin")
    for path in (xml, weights):
        if not path.is_file():
            raise UserError(f"external model file not found: {path}")
    if precision is None:
        precision = "int8" if "INT8" in xml.parent.name.upper() else "fp16"
    template = RETAIL_0095_TEMPLATE_96x112 * np.array([128 / 96, 128 / 112])
    input_name, output_name = _openvino_io_names(xml)
    return Manifest(
        name=RETAIL_0095, target="openvino", model_file=str(xml), model_sha256=sha256_file(xml),
        weights_file=str(weights), weights_sha256=sha256_file(weights),
        input=InputSpec(shape=[1, 3, 128, 128], name=input_name, layout="NCHW", color="BGR",
                        mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
        alignment={"template": np.round(template, 4).tolist(), "crop_size": [128, 128]},
        embedding_dim=256, precision=precision, threshold=threshold,
        output={"name": output_name}, version="external")


def _openvino_io_names(xml: Path) -> tuple[str, str]:
    from lafs_edge.runtime.openvino import shared_core

    model = shared_core().read_model(str(xml))
    return model.inputs[0].get_any_name(), model.outputs[0].get_any_name()
