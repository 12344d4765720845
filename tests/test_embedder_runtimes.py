"""The Embedder over several runtimes, the external OpenVINO model through a written manifest."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lafs_edge.errors import UserError
from lafs_edge.image import read_image
from lafs_edge.runtime.embedder import Embedder
from lafs_edge.hashing import sha256_file
from lafs_edge.runtime.manifest import InputSpec, Manifest, read_manifest, write_manifest

pytestmark = pytest.mark.device

RETAIL_README_TEMPLATE_96x112 = [(30.2946, 51.6963), (65.5318, 51.5014), (48.0252, 71.7366),
                                 (33.5493, 92.3655), (62.7299, 92.2041)]


@pytest.fixture(scope="module")
def astronaut(shared_data, face_analyzer):
    image = read_image(shared_data / "photos" / "astronaut.png")
    return image, face_analyzer.analyze(image)[0].points5


@pytest.fixture(scope="module")
def group_photo(shared_data, face_analyzer):
    image = read_image(shared_data / "photos" / "sample3.jpg")
    return image, [face.points5 for face in face_analyzer.analyze(image)]


def test_manifest_external_command_writes_the_readme_preprocessing(shared_models, tmp_path):
    from lafs_edge.cli import main

    xml = shared_models / "face-reidentification-retail-0095" / "FP16" / "face-reidentification-retail-0095.xml"
    assert main(["manifest-external", str(xml), "--out", str(tmp_path / "art")]) == 0
    manifest, _ = read_manifest(tmp_path / "art")
    assert manifest.target == "openvino" and manifest.input.color == "BGR"
    assert manifest.input.mean == [0, 0, 0] and manifest.input.std == [1, 1, 1]
    assert manifest.input.shape == [1, 3, 128, 128] and manifest.embedding_dim == 256
    expected = np.array(RETAIL_README_TEMPLATE_96x112) * [128 / 96, 128 / 112]
    np.testing.assert_allclose(manifest.alignment["template"], expected, atol=1e-4)
    assert manifest.model_sha256 == sha256_file(xml)
    assert not list(xml.parent.glob("manifest.json"))   # ../shared is never written to


def test_external_model_matches_a_direct_openvino_call(retail_0095, astronaut):
    """Preprocessing from the manifest == the README's recipe done by hand (BGR, 0-255, NCHW)."""
    from lafs_edge.runtime.openvino import shared_core

    image, points = astronaut
    embedder = Embedder.from_artifact(retail_0095["FP16"])
    crop = embedder.align(image, [points])[0]
    ours = embedder.embed_crops([crop])[0]
    manifest = embedder.manifest
    # f32 on both sides: this CPU plugin would otherwise run the reference in bf16.
    compiled = shared_core().compile_model(str(retail_0095["FP16"] / manifest.model_file), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "f32"})
    by_hand = crop[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)[None]   # RGB -> BGR, NCHW
    reference = compiled(by_hand)[compiled.output(0)].reshape(-1)
    reference /= np.linalg.norm(reference)
    assert float(ours @ reference) > 0.99999
    assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-5)


def test_several_faces_one_batch_equal_one_by_one(retail_0095, group_photo):
    image, points = group_photo
    assert len(points) == 3
    embedder = Embedder.from_artifact(retail_0095["FP16"])
    batch = embedder.embed(image, points)
    single = np.concatenate([embedder.embed(image, [p]) for p in points])
    assert batch.shape == (3, 256)
    np.testing.assert_allclose(batch, single, atol=1e-5)
    similarity = batch @ batch.T
    assert similarity[np.triu_indices(3, 1)].max() < 0.5   # three different women


def test_fp16_and_int8_agree_but_have_different_fingerprints(retail_0095, group_photo):
    image, points = group_photo
    fp16 = Embedder.from_artifact(retail_0095["FP16"])
    int8 = Embedder.from_artifact(retail_0095["FP16-INT8"])
    cosine = np.sum(fp16.embed(image, points) * int8.embed(image, points), axis=1)
    assert cosine.min() > 0.95
    assert fp16.fingerprint != int8.fingerprint
    assert fp16.fingerprint == Embedder.from_artifact(retail_0095["FP16"]).fingerprint


def test_tampered_model_or_bad_manifest_is_refused(retail_0095, tmp_path):
    folder = tmp_path / "art"
    shutil.copytree(retail_0095["FP16"], folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["weights_sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="does not match the manifest"):
        Embedder.from_artifact(folder)
    data = json.loads((retail_0095["FP16"] / "manifest.json").read_text())
    data["alignment"]["crop_size"] = [112, 112]
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="crop_size"):
        Embedder.from_artifact(folder)


def _tiny_artifacts(tmp_path):
    """A small project model as a PyTorch checkpoint, as ONNX, and as that ONNX file opened by
    OpenVINO (which reads ONNX directly), each with its manifest."""
    import torch

    from lafs_edge.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("mobilefacenet").eval()
    folders = {}
    for target, file in (("pytorch", "model.pt"), ("onnx", "model.onnx"), ("openvino", "model.onnx")):
        folder = tmp_path / target
        folder.mkdir()
        if target == "pytorch":
            save_checkpoint(model, folder / file)
        elif target == "openvino":
            shutil.copy(folders["onnx"] / file, folder / file)
        else:
            torch.onnx.export(model, (torch.zeros(1, 3, 112, 112),), str(folder / file),
                              input_names=["images"], output_names=["embedding"],
                              dynamic_axes={"images": {0: "batch"}}, dynamo=False)
        write_manifest(Manifest(name="mobilefacenet", target=target, model_file=file,
                                model_sha256=sha256_file(folder / file),
                                input=InputSpec(shape=[-1, 3, 112, 112]),
                                alignment={"crop_size": [112, 112]},
                                embedding_dim=model.embedding_dim, threshold=0.3), folder)
        folders[target] = folder
    return folders, model


def test_one_interface_over_pytorch_onnx_runtime_and_openvino(tmp_path, shared_data, face_analyzer):
    """The same faces through the PyTorch, ONNX Runtime and OpenVINO backends give the same embeddings,
    and they equal the model called directly on the project's standard input."""
    import torch
    import torch.nn.functional as F

    from lafs_edge.align import align_face
    from lafs_edge.image import to_model_input

    folders, model = _tiny_artifacts(tmp_path)
    image = read_image(shared_data / "photos" / "sample1.jpg")
    points = [face.points5 for face in face_analyzer.analyze(image)]
    outputs = {target: Embedder.from_artifact(folder).embed(image, points)
               for target, folder in folders.items()}
    crops = [align_face(image, p) for p in points]
    with torch.inference_mode():
        reference = F.normalize(model(to_model_input(crops)), dim=1).numpy()
    for target, vectors in outputs.items():
        assert vectors.shape == (3, model.embedding_dim)
        np.testing.assert_allclose(vectors, reference, atol=2e-4, err_msg=target)


def test_two_openvino_artifacts_freed_leave_signal_handling_working(retail_0095, tmp_path):
    """OpenVINO's CPU plugin ties the thread's signal stack to the Core that compiled a model:
    with a Core per artifact, two embedders freed in creation order made the next Python-handled
    signal (here torch DataLoader's kind, SIGCHLD from a finished child) a SIGSEGV."""
    import subprocess
    import sys

    script = f"""
import gc, signal, subprocess, sys
from lafs_edge.runtime.embedder import Embedder
first = Embedder.from_artifact({str(retail_0095["FP16"])!r})
second = Embedder.from_artifact({str(retail_0095["FP16-INT8"])!r})
del first, second
gc.collect()
signal.signal(signal.SIGCHLD, lambda *_: None)
subprocess.run([sys.executable, "-c", "pass"], check=True)
print("alive")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "alive", (done.returncode, done.stderr)

