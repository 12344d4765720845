"""Bad export/verify input: one clear line, non-zero exit, no artifact (not even half of one)."""
from __future__ import annotations

import os

import pytest

from lafs_edge.cli import main
from lafs_edge.convert import export as export_module
from lafs_edge.convert.export import build_artifact
from lafs_edge.errors import UserError
from lafs_edge.models import create_model

pytestmark = pytest.mark.conversion

TINY = ["model.overrides.preset=test"]  # lafs_edge.models.registry.PRESETS


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_missing_checkpoint(tmp_path, capsys):
    rc = main(["export", str(tmp_path / "nope.pt"), "--target", "onnx", "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "checkpoint not found" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("target, precision", [("onnx", "int8"), ("onnx", "fp16"), ("pytorch", "int8")])
def test_unsupported_target_precision(tmp_path, capsys, target, precision):
    rc = main(["export", "mobilefacenet", "--target", target, "--precision", precision,
               "--calib", str(tmp_path), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert f"{target} does not export {precision}" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_int8_without_calibration(tmp_path, capsys):
    rc = main(["export", "mobilefacenet", "--target", "openvino", "--precision", "int8",
               "--out", str(tmp_path / "out")])
    assert rc == 2 and "--calib" in _one_error_line(capsys)


def test_calibration_folder_without_faces(tmp_path, capsys):
    empty = tmp_path / "calib"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here\n")
    out = tmp_path / "out"
    rc = main(["export", "part_fvit_tiny", "--random-init", *TINY, "--target", "openvino", "--precision", "int8",
               "--calib", str(empty), "--out", str(out)])
    assert rc == 2 and "no faces found" in _one_error_line(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_failed_conversion_leaves_no_artifact_and_keeps_the_old_one(tmp_path, monkeypatch):
    folder = tmp_path / "art"
    folder.mkdir()
    (folder / "model.onnx").write_text("previous artifact")
    (folder / "manifest.json").write_text('{"format": "lafs-edge-artifact/1"}')   # ours

    def broken_export(model, tmp, precision, calib, float_groups):
        (tmp / "model.onnx").write_text("half written")
        raise UserError("converter exploded")

    import lafs_edge.convert.onnx as onnx_target

    monkeypatch.setattr(onnx_target, "export", broken_export)
    with pytest.raises(UserError, match="converter exploded"):
        build_artifact(create_model("mobilefacenet"), "onnx", "fp32", folder, None, [],
                       lambda tmp, converted: None)
    assert (folder / "model.onnx").read_text() == "previous artifact"
    assert sorted(os.listdir(tmp_path)) == ["art"]  # no temp folder left behind


def test_check_request_names_the_choices():
    with pytest.raises(UserError, match="unknown target 'tensorrt'"):
        export_module.check_request("tensorrt", "fp32")


def test_verify_missing_artifact(tmp_path, capsys):
    rc = main(["verify", str(tmp_path / "missing"), "--data", str(tmp_path)])
    assert rc == 2 and "no manifest.json" in _one_error_line(capsys)
