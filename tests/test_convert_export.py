"""Export every target x precision for a small part fViT and MobileFaceNet, on real faces.

Sources are checkpoints whose BatchNorm statistics were re-estimated on real aligned faces, so
activations have realistic ranges (untrained BatchNorm makes MobileFaceNet's output ~1e-6, which
no int8 scheme can represent). The int8 >= 0.99 criterion on *trained* students is shown in
docs/deploy.md; here every artifact is checked against PyTorch on ORL faces that calibration
never saw. One export per (model, precision) via module-scoped fixtures keeps this file short.
"""
from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from lafs_edge.convert.data import load_faces
from lafs_edge.convert.export import SUPPORTED
from lafs_edge.convert.pipeline import export_models
from lafs_edge.convert.verify import failures, inspect_coreml
from lafs_edge.models import create_model, save_checkpoint
from lafs_edge.runtime.backends import open_runtime, sha256_path
from lafs_edge.runtime.manifest import read_manifest
from lafs_edge.hashing import sha256_file

pytestmark = pytest.mark.conversion

TINY = {"part_fvit_tiny": dict(preset="test"), "mobilefacenet": {}}  # registry PRESETS
MODELS = list(TINY)
PRECISIONS = ("fp32", "fp16", "int8")
# int8 on untrained weights: 0.95 (they are int8-hostile, e.g. 0.93 for all-int8 MobileFaceNet);
# the real criterion, 0.99 on trained students, is measured in docs/deploy.md.
MIN_COSINE = {"fp32": ("min", 0.9999), "fp16": ("min", 0.999), "int8": ("mean", 0.95)}


def refresh_batchnorm(model: torch.nn.Module, images: np.ndarray) -> None:
    """Re-estimate BatchNorm running statistics on real faces (cumulative average)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(images))
    model.eval()


@pytest.fixture(scope="module")
def checkpoints(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    faces = load_faces(shared_data / "wild5", limit=48, seed=3).model_input()
    paths = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = create_model(name, **TINY[name])
        refresh_batchnorm(model, faces)
        paths[name] = folder / f"{name}.pt"
        save_checkpoint(model, paths[name])
    return paths


@pytest.fixture(scope="module")
def artifacts(checkpoints, shared_data, tmp_path_factory):
    """(model, precision) -> {target: folder}; exported lazily, once."""
    out = tmp_path_factory.mktemp("artifacts")
    cache: dict = {}

    def get(name: str, precision: str) -> dict:
        if (name, precision) not in cache:
            targets = [t for t in ("onnx", "openvino", "tflite", "coreml") if precision in SUPPORTED[t]]
            results = export_models(str(checkpoints[name]), targets, precision, out,
                                    calib=str(shared_data / "wild5"), calib_count=16,
                                    pairs=str(shared_data / "yale"), pairs_count=60)
            cache[name, precision] = {m.target: folder for folder, m in results}
        return cache[name, precision]

    return get


@pytest.fixture(scope="module")
def orl_faces(shared_data):
    return load_faces(shared_data / "orl", limit=24, seed=5)


def _torch_embeddings(checkpoint, faces) -> np.ndarray:
    from lafs_edge.models import load_model

    with torch.no_grad():
        return load_model(checkpoint)(torch.from_numpy(faces.model_input())).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", MODELS)
def test_runnable_targets_match_pytorch_on_unseen_faces(name, precision, artifacts, checkpoints, orl_faces):
    reference = _torch_embeddings(checkpoints[name], orl_faces)
    stat, limit = MIN_COSINE[precision]
    for target, folder in artifacts(name, precision).items():
        if target == "coreml":
            continue
        runtime = open_runtime(folder)
        spec = runtime.manifest.input
        batch = orl_faces.model_input()
        if spec.layout == "NHWC":
            batch = batch.transpose(0, 2, 3, 1)
        cos = _cosines(runtime.run(batch), reference)
        value = cos.min() if stat == "min" else cos.mean()
        assert value >= limit, f"{target} {precision}: {stat} cosine {value:.6f} < {limit}"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", MODELS)
def test_manifest_is_complete_and_honest(name, precision, artifacts, checkpoints):
    for target, folder in artifacts(name, precision).items():
        manifest, _ = read_manifest(folder)
        assert manifest.target == target and manifest.precision == precision
        assert manifest.model_sha256 == sha256_path(folder / manifest.model_file)
        if manifest.weights_file:
            assert manifest.weights_sha256 == sha256_file(folder / manifest.weights_file)
        assert manifest.source_checkpoint_sha256 == sha256_file(checkpoints[name])
        assert manifest.embedding_dim == (32 if name == "part_fvit_tiny" else 128)
        assert manifest.alignment["crop_size"] == [112, 112]
        assert -1.0 < manifest.threshold < 1.0
        assert manifest.converters["torch"] == torch.__version__
        if target == "coreml":
            assert manifest.parity["failures"] == [] and "program" in manifest.parity
        else:  # parity on the labelled pairs set, recorded at export, and its verdict
            assert manifest.parity["faces"] == 60 and "accuracy" in manifest.parity
            assert manifest.parity["failures"] == failures(manifest.parity, precision)
            if precision != "int8":
                assert manifest.parity["failures"] == []
        if precision == "int8":
            sensitivity = manifest.parity["int8_sensitivity"]
            expected = [] if target == "coreml" else sensitivity["float_groups"]  # weights only
            assert set(manifest.parity["kept_float"]) == set(expected)
            # the target met with int8 really used: at least one group quantized
            assert sensitivity["mixed_cosine"] >= 0.995, sensitivity
            assert set(sensitivity["float_groups"]) < set(sensitivity["drops"]), sensitivity


@pytest.mark.parametrize("name", MODELS)
def test_quantized_artifacts_are_smaller(name, artifacts):
    sizes = {p: {t: _size(f) for t, f in artifacts(name, p).items()} for p in PRECISIONS}
    for target in ("openvino", "tflite", "coreml"):
        assert sizes["fp16"][target] < 0.6 * sizes["fp32"][target], target
        assert sizes["int8"][target] < sizes["fp32"][target], target


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", MODELS)
def test_coreml_program_inspection(name, precision, artifacts):
    folder = artifacts(name, precision)["coreml"]
    manifest, _ = read_manifest(folder)
    program = inspect_coreml(folder, manifest)
    assert program["problems"] == []
    assert program["inputs"] == {"images": [1, 3, 112, 112]}
    assert list(program["outputs"]) == ["embedding"]
    assert (program["quantized_weight_ops"] > 0) == (precision == "int8")
    if name == "part_fvit_tiny":
        assert "gather_along_axis" in program["ops"]  # the gather sampler, not grid_sample


@pytest.mark.skipif(platform.system() != "Darwin",
                    reason="Core ML prediction needs macOS; on Linux the program is inspected instead")
@pytest.mark.parametrize("name", MODELS)
def test_coreml_predicts_like_pytorch_on_macos(name, artifacts, checkpoints, orl_faces):
    runtime = open_runtime(artifacts(name, "fp32")["coreml"])
    cos = _cosines(runtime.run(orl_faces.model_input()), _torch_embeddings(checkpoints[name], orl_faces))
    assert cos.min() >= 0.999
