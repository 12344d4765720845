"""open_runtime: backend choice from the manifest, sha256 check at load, fixed-batch chunking,
integer TFLite I/O, the PyTorch backend, and Core ML's clear refusal off macOS."""
from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from lafs_edge.convert.pipeline import export_models
from lafs_edge.errors import UserError
from lafs_edge.models import load_model
from lafs_edge.runtime import litert
from lafs_edge.runtime.backends import open_runtime
from lafs_edge.runtime.manifest import read_manifest, write_manifest

pytestmark = pytest.mark.conversion

TINY = dict(preset="test")  # lafs_edge.models.registry.PRESETS


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("rt")
    results = export_models("part_fvit_tiny", ["pytorch", "tflite", "onnx"], "fp32", out, overrides=TINY,
                             random_init=True)
    return {m.target: folder for folder, m in results}


@pytest.fixture(scope="module")
def faces(shared_data):
    from lafs_edge.convert.data import load_faces

    return load_faces(shared_data / "orl", limit=5, seed=1).model_input()


def _reference(faces):
    torch.manual_seed(0)  # registry exports use seed 0
    with torch.no_grad():
        return load_model("part_fvit_tiny", **TINY)(torch.from_numpy(faces)).numpy()


def test_pytorch_and_onnx_backends_match_the_model(exported, faces):
    reference = _reference(faces)
    for target in ("pytorch", "onnx"):
        out = open_runtime(exported[target]).run(faces)
        np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-5)


def test_fixed_batch_model_is_fed_in_chunks(exported, faces):
    runtime = open_runtime(exported["tflite"], threads=1)
    assert runtime.fixed_batch == 1 and runtime.manifest.input.layout == "NHWC"
    nhwc = faces.transpose(0, 2, 3, 1).copy()
    together = runtime.run(nhwc)  # 5 faces through a batch-1 model
    one_by_one = np.concatenate([runtime.run(nhwc[i:i + 1]) for i in range(len(nhwc))])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-6)
    np.testing.assert_allclose(together, _reference(faces), rtol=1e-3, atol=1e-4)


def test_wrong_input_shape_is_one_clear_error(exported, faces):
    with pytest.raises(UserError, match="expected input"):
        open_runtime(exported["onnx"]).run(faces.transpose(0, 2, 3, 1))


def test_modified_model_file_is_refused(exported, tmp_path):
    import shutil

    copy = tmp_path / "art"
    shutil.copytree(exported["onnx"], copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="sha256"):
        open_runtime(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(UserError, match="missing"):
        open_runtime(copy)


def test_embedding_size_mismatch_is_caught(exported, tmp_path, faces):
    import shutil

    copy = tmp_path / "art"
    shutil.copytree(exported["onnx"], copy)
    manifest, _ = read_manifest(copy)
    manifest.embedding_dim = 65
    write_manifest(manifest, copy)
    with pytest.raises(UserError, match="embedding_dim 65"):
        open_runtime(copy).run(faces)


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the refusal off macOS")
def test_coreml_refuses_to_predict_off_macos(exported, tmp_path):
    import shutil

    copy = tmp_path / "art"
    shutil.copytree(exported["onnx"], copy)
    manifest, _ = read_manifest(copy)
    manifest.target = "coreml"
    write_manifest(manifest, copy)
    with pytest.raises(UserError, match="needs macOS"):
        open_runtime(copy)


def test_litert_integer_io_round_trips():
    detail = {"dtype": np.int8, "quantization": (0.0078125, 0)}
    values = np.linspace(-1, 0.99, 50, dtype=np.float32)
    q = litert.quantize(values, detail)
    assert q.dtype == np.int8
    np.testing.assert_allclose(litert.dequantize(q, detail), values, atol=0.0078125 / 2 + 1e-7)
    assert litert.quantize(np.array([5.0], np.float32), detail)[0] == 127  # saturates


def test_verify_cli_passes_then_fails_against_other_weights(exported, shared_data, tmp_path, capsys):
    from lafs_edge.cli import main
    from lafs_edge.models import create_model, save_checkpoint

    artifact = str(exported["onnx"])
    assert main(["verify", artifact, "--data", str(shared_data / "orl"), "--limit", "24",
                 "--no-update"]) == 0
    assert "PASS" in capsys.readouterr().out
    torch.manual_seed(1)  # same architecture, other weights: parity must fail, exit 1
    other = tmp_path / "other.pt"
    save_checkpoint(create_model("part_fvit_tiny", **TINY), other)
    assert main(["verify", artifact, "--data", str(shared_data / "orl"), "--limit", "24",
                 "--model", str(other), "--no-update"]) == 1
    assert "FAIL: mean_cosine" in capsys.readouterr().out


def test_bench_cli_writes_markdown_and_json(exported, tmp_path, capsys):
    import json

    from lafs_edge.cli import main

    out = tmp_path / "bench"
    assert main(["bench", str(exported["onnx"]), "--runs", "3", "--warmup", "1", "--batch", "1",
                 "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["runs"] == 3 and rows[0]["median_ms"] > 0
    assert rows[0]["gflops"] > 0 and rows[0]["speedup_vs_pytorch"] > 0
    assert rows[0]["executes_in"] == "f32"
    assert "| part_fvit_tiny-onnx-fp32 | f32 | 1 | 1 |" in out.with_suffix(".md").read_text()


def test_execution_precision_is_read_from_the_loaded_runtime(exported, tmp_path):
    """bench reports what the runtime computes in: the LiteRT interpreter's layer inputs, and
    OpenVINO's compiled model (the runtime asks for f32, so "fp32" does not silently run bf16)."""
    from lafs_edge.convert.bench import execution_precision, summarize_precisions

    assert execution_precision(open_runtime(exported["tflite"], threads=1)) == "f32"
    (folder, _), = export_models("part_fvit_tiny", ["openvino"], "fp32", tmp_path, overrides=TINY,
                                   random_init=True)
    assert execution_precision(open_runtime(folder, threads=1)) == "f32"
    assert summarize_precisions({"int8": 48, "f32": 2}) == "int8 48/50 + f32 2/50"
    assert summarize_precisions({}) == "unknown"
