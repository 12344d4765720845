"""Issue 24 (hardening round 2), items 4, 6, 9, 10, 12 and 13: broken models and manifests,
oversized and corrupt images, and results a person can read. Each failed before the fix."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lafs_edge.errors import UserError
from lafs_edge.models import create_model, save_checkpoint

pytestmark = pytest.mark.device

TINY = dict(preset="test")


def one_error_line(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- 4. a NaN model --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory) -> Path:
    model = create_model("part_fvit_tiny", **TINY)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    path = tmp_path_factory.mktemp("nan") / "nan.pt"
    save_checkpoint(model, path)
    return path


def test_embed_refuses_nan_vectors(cli, nan_checkpoint, tmp_path):
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((112, 112, 3), 128, np.uint8))
    code, _, err = cli("embed", face, "--model", nan_checkpoint, "--out", tmp_path / "e.npy")
    assert code == 2
    one_error_line(err, "non-finite")
    assert not (tmp_path / "e.npy").exists()


def test_kshot_evaluation_of_a_nan_model_is_an_error_not_a_perfect_score(cli, nan_checkpoint,
                                                                        shared_data):
    code, out, err = cli("eval", "--model", nan_checkpoint, "--data", shared_data / "orl",
                         "--protocol", "kshot", "--k", "1")
    assert code == 2 and "rank1" not in out
    one_error_line(err, "non-finite")


# --- 6. degenerate manifests -----------------------------------------------------------------------

@pytest.fixture()
def artifact(tiny_artifact, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny_artifact, tmp_path / "artifact"))


def edit_manifest(folder: Path, **changes) -> None:
    file = folder / "manifest.json"
    data = json.loads(file.read_text())
    for key, value in changes.items():
        if key == "template":
            data["alignment"]["template"] = value
        else:
            data[key] = value
    file.write_text(json.dumps(data))


def load(folder: Path):
    from lafs_edge.runtime.embedder import Embedder

    return Embedder.from_artifact(folder)


@pytest.mark.parametrize("template", [[[0, 0]] * 5,
                                      [[10, 10], [20, 20], [30, 30], [40, 40], [50, 50]],
                                      [[38, 51], [73, 51], [56, 71], [41, 92], [70, 92000]]])
def test_a_degenerate_template_is_refused(artifact, template):
    edit_manifest(artifact, template=template)
    with pytest.raises(UserError, match="degenerate|outside the"):
        load(artifact)


def test_a_model_file_outside_the_folder_is_refused(artifact, tmp_path):
    manifest = json.loads((artifact / "manifest.json").read_text())
    model = artifact / manifest["model_file"]
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(model.read_bytes())   # same bytes, same hash: only the place differs
    for name in ("../elsewhere.pt", str(outside)):
        edit_manifest(artifact, model_file=name)
        with pytest.raises(UserError, match="outside the artifact folder"):
            load(artifact)
    model.unlink()
    model.symlink_to(outside)
    edit_manifest(artifact, model_file=manifest["model_file"])
    with pytest.raises(UserError, match="outside the artifact folder"):
        load(artifact)


def test_a_bad_manifest_is_one_line_through_the_cli(cli, artifact, tmp_path):
    edit_manifest(artifact, template=[[0, 0]] * 5)
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((112, 112, 3), 128, np.uint8))
    code, _, err = cli("embed", face, "--model", artifact, "--out", tmp_path / "e.npy")
    assert code == 2
    one_error_line(err, "degenerate")


def test_a_nan_threshold_is_refused_when_writing(cli, shared_models, tmp_path):
    from lafs_edge.runtime.embedder import RETAIL_0095, external_manifest
    from lafs_edge.runtime.manifest import write_manifest

    xml = shared_models / RETAIL_0095 / "FP16" / f"{RETAIL_0095}.xml"
    code, _, err = cli("manifest-external", xml, "--out", tmp_path / "a", "--threshold", "nan")
    assert code == 2 and "--threshold" in err
    assert not (tmp_path / "a" / "manifest.json").exists()
    with pytest.raises(UserError, match="threshold"):
        write_manifest(external_manifest(xml, threshold=float("nan")), tmp_path / "b")
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_manifest_external_copies_the_model_into_its_folder(cli, shared_models, tmp_path):
    from lafs_edge.runtime.embedder import RETAIL_0095

    xml = shared_models / RETAIL_0095 / "FP16" / f"{RETAIL_0095}.xml"
    assert cli("manifest-external", xml, "--out", tmp_path / "a")[0] == 0
    data = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert data["model_file"] == xml.name and (tmp_path / "a" / xml.name).is_file()
    assert load(tmp_path / "a").embedding_dim == 256
