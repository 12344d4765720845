"""Shipped weights: each loads through the registry, is sha256-checked, and recognises real faces;
the device commands use the shipped student when no --model is given."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lafs_edge.models import checkpoint_threshold, create_model, list_models, pretrained
from lafs_edge.models.pretrained import shipped

pytestmark = pytest.mark.models

SHIPPED = sorted(shipped())


def test_the_students_ship_weights():
    assert {"mobilefacenet", "part_fvit_tiny"} <= set(SHIPPED) <= set(list_models())
    for entry in shipped().values():
        assert (pretrained.WEIGHTS / entry["card"]).is_file()
        # one stored threshold: the checkpoint's (the index does not repeat it)
        assert "threshold" not in entry
        assert -1 < checkpoint_threshold(pretrained.WEIGHTS / entry["file"]) < 1
        assert (pretrained.WEIGHTS / entry["file"]).stat().st_size < 20e6  # a few MB each


@pytest.mark.parametrize("name", SHIPPED)
def test_pretrained_loads_the_shipped_tensors(name):
    model = create_model(name, pretrained=True).eval()
    payload = torch.load(pretrained.WEIGHTS / shipped()[name]["file"], weights_only=True)
    state = model.state_dict()
    assert payload["state_dict"].keys() == state.keys()
    for key, value in payload["state_dict"].items():
        assert torch.equal(state[key], value.to(state[key].dtype)), key
    untrained = create_model(name, **payload["config"]).eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(model(x), untrained(x))


def _copy_weights(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    shutil.copytree(pretrained.WEIGHTS, folder)
    monkeypatch.setattr(pretrained, "WEIGHTS", folder)
    monkeypatch.setattr(pretrained, "INDEX", folder / "index.json")
    return folder


def test_a_corrupt_or_missing_weights_file_is_refused(tmp_path, monkeypatch):
    folder = _copy_weights(tmp_path, monkeypatch)
    name = SHIPPED[0]
    path = folder / shipped()[name]["file"]
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer
    with pytest.raises(ValueError, match="sha256 check"):
        create_model(name, pretrained=True)
    path.unlink()
    with pytest.raises(ValueError, match="missing"):
        create_model(name, pretrained=True)
    with pytest.raises(ValueError, match="no shipped weights for 'part_fvit_base'"):
        create_model("part_fvit_base", pretrained=True)


def test_models_command_says_which_have_weights(capsys):
    from lafs_edge.cli import main

    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {n for n, r in rows.items() if r["weights"]} == set(SHIPPED)


@pytest.fixture(scope="module")
def orl_aligned(shared_data, face_analyzer):
    """ORL (never used in training or calibration) aligned as the device aligns: MediaPipe's
    5 points -> the 112x112 ArcFace crop."""
    from lafs_edge.align import align_face
    from lafs_edge.image import read_image
    from lafs_edge.train.data import LabelledFolder

    crops, labels = [], []
    for path, label in LabelledFolder(shared_data / "orl").samples:
        image = read_image(path)
        faces = face_analyzer.analyze(image)
        if faces:
            crops.append(align_face(image, faces[0].points5))
            labels.append(label)
    return np.stack(crops), np.array(labels)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_students_recognise_real_faces(name, orl_aligned):
    """One enrolled image per ORL person, rank-1 on the other nine. Untrained weights of the
    same architectures score 0.35-0.41 here."""
    crops, labels = orl_aligned
    model = create_model(name, pretrained=True).eval()
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        emb = torch.nn.functional.normalize(model(x), dim=1).numpy()
    first = np.array([np.flatnonzero(labels == c)[0] for c in np.unique(labels)])
    probes = np.setdiff1d(np.arange(len(labels)), first)
    predicted = labels[first][np.argmax(emb[probes] @ emb[first].T, axis=1)]
    assert (predicted == labels[probes]).mean() > 0.8


def test_an_export_of_shipped_weights_carries_their_one_threshold(tmp_path):
    """The checkpoint is the threshold's one stored place; export copies it into the manifest."""
    from lafs_edge.convert.pipeline import export_models

    checkpoint = pretrained.weights_file("part_fvit_tiny")
    [(folder, manifest)] = export_models(str(checkpoint), ["pytorch"], "fp32", tmp_path)
    assert manifest.threshold == checkpoint_threshold(checkpoint)
    assert manifest.parity["threshold_from"].startswith("checkpoint")
