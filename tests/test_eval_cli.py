"""`lafs-edge eval` end to end with a random-weights tiny model: ORL / Yale pairs and k-shot, an
InsightFace .bin built from ORL, and an IJB meta layout built from wild5 crops. Numbers carry no
meaning (random weights); the tests check wiring against direct computations."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from lafs_edge.align import align_face
from lafs_edge.cli import main
from lafs_edge.image import read_image, to_model_input
from lafs_edge.models import create_model, load_model, save_checkpoint
from lafs_edge.image_folders import to_112
from lafs_edge.train.data.folders import LabelledFolder
from lafs_edge.landmark_lists import read_landmark_list
from lafs_edge.train.evaluate.ijb import evaluate_ijb, read_meta
from lafs_edge.train.evaluate.verification import write_bin
from lafs_edge.verification import verification_report

pytestmark = pytest.mark.evaluation

TINY = dict(preset="test")  # lafs_edge.models.registry.PRESETS


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(create_model("part_fvit_tiny", **TINY), path)
    return path


def _embed(model, images, normalize=True):
    with torch.inference_mode():
        out = model(to_model_input(list(images)))
    return torch.nn.functional.normalize(out, dim=1).numpy() if normalize else out.numpy()


def _eval(tmp_path, *argv):
    out = tmp_path / "report.json"
    assert main(["eval", *argv, "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", ["orl", "yale"])
def test_pairs_and_kshot_on_real_folders(shared_data, tiny_checkpoint, tmp_path, name, capsys):
    data = shared_data / name
    pairs = _eval(tmp_path, "--model", str(tiny_checkpoint), "--data", str(data), "--protocol", "pairs")
    identities, per_identity = {"orl": (40, 10), "yale": (15, 11)}[name]
    genuine = identities * per_identity * (per_identity - 1) // 2
    assert pairs["genuine"] == pairs["impostor"] == genuine
    assert 0.0 <= pairs["accuracy"] <= 1.0 and len(pairs["fold_accuracies"]) == 10
    assert set(pairs["tar_at_far"]) == {"0.01", "0.001", "0.0001", "1e-05"}
    kshot = _eval(tmp_path, "--model", str(tiny_checkpoint), "--data", str(data),
                  "--protocol", "kshot", "--k", "2", "--unknown-fraction", "0.2", "--seed", "3")
    known = identities - round(0.2 * identities)
    assert kshot["gallery_identities"] == known and kshot["enrolled"] == 2 * known
    assert kshot["probes"] == known * (per_identity - 2)
    assert kshot["unknown_probes"] == (identities - known) * per_identity
    assert 0 <= kshot["rank1"] <= kshot["rank5"] <= 1
    assert "rank1:" in capsys.readouterr().out


def test_kshot_list_selects_images(shared_data, tiny_checkpoint, tmp_path):
    lst = tmp_path / "k.lst"
    assert main(["data", "kshot", str(shared_data / "orl"), "--k", "4", "--fraction", "0.25",
                 "--out", str(lst)]) == 0
    report = _eval(tmp_path, "--model", str(tiny_checkpoint), "--data", str(shared_data / "orl"),
                   "--list", str(lst), "--protocol", "kshot", "--k", "1", "--unknown-fraction", "0")
    assert report["images"] == 40 and report["identities"] == 10 and report["probes"] == 30


def test_bin_protocol_matches_direct_computation(shared_data, tiny_checkpoint, tmp_path):
    faces = LabelledFolder(shared_data / "orl", transform=to_112)
    index = [0, 1, 10, 11, 20, 21, 2, 12, 13, 22, 3, 23] * 2  # 12 pairs: same, same, same, diff...
    issame = [True, True, True, False, False, False] * 2
    encoded = [cv2.imencode(".jpg", faces[i][0][:, :, ::-1])[1].tobytes() for i in index]
    write_bin(tmp_path / "orl.bin", encoded, issame)
    report = _eval(tmp_path, "--model", str(tiny_checkpoint), "--data", str(tmp_path / "orl.bin"),
                   "--protocol", "bin", "--folds", "2")
    model = load_model(tiny_checkpoint)
    decoded = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1] for b in encoded]
    emb = _embed(model, decoded)
    scores = (emb[0::2] * emb[1::2]).sum(1)
    expected = verification_report(scores, np.array(issame), folds=2)
    assert report["auc"] == pytest.approx(expected["auc"], abs=1e-6)
    assert report["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)


def _ijb_layout(root, shared_data, count=12):
    """IJB-C style meta + loose crops from wild5 faces: 2 faces per template, templates 1..6,
    template t's faces in one media when t is even (video frames), separate media otherwise."""
    entries = read_landmark_list(shared_data / "wild5" / "landmarks.txt")[:count]
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    faces, points = [], []
    for i, (rel, pts) in enumerate(entries):
        name = f"{i + 1}.jpg"
        (root / "loose_crop" / name).write_bytes((shared_data / "wild5" / rel).read_bytes())
        template = i // 2 + 1
        media = 100 + template if template % 2 == 0 else 200 + i
        faces.append(f"{name} {template} {media}")
        score = 0.5 + 0.04 * i
        points.append(" ".join([name] + [f"{v:.3f}" for v in pts.reshape(-1)] + [f"{score}"]))
    pairs = [f"{a} {b} {int((a + b) % 2 == 0)}" for a in range(1, 7) for b in range(a + 1, 7)]
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(faces) + "\n")
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(points) + "\n")
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    return entries


def test_ijb_protocol_on_built_layout(shared_data, tiny_checkpoint, tmp_path):
    root = tmp_path / "IJBC"
    entries = _ijb_layout(root, shared_data)
    report = _eval(tmp_path, "--model", str(tiny_checkpoint), "--data", str(root),
                   "--protocol", "ijb", "--flip", "--far", "0.1", "0.5")
    assert report["faces"] == 12 and report["templates"] == 6 and report["pairs"] == 15
    model = load_model(tiny_checkpoint)
    crops = [align_face(read_image(shared_data / "wild5" / rel), pts) for rel, pts in entries]
    raw = _embed(model, crops, normalize=False) + _embed(model, [c[:, ::-1] for c in crops], normalize=False)
    expected = evaluate_ijb(raw, read_meta(root), fars=(0.1, 0.5))
    for far in ("0.1", "0.5"):
        assert report["tar_at_far"][far]["tar"] == pytest.approx(expected["tar_at_far"][far]["tar"])
    assert report["auc"] == pytest.approx(expected["auc"], abs=1e-6)


def test_ijb_bad_meta_is_one_line(shared_data, tiny_checkpoint, tmp_path, capsys):
    root = tmp_path / "IJBC"
    _ijb_layout(root, shared_data)
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("1 2\n")
    assert main(["eval", "--model", str(tiny_checkpoint), "--data", str(root), "--protocol", "ijb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "expected 3 fields" in err and "\n" not in err


def test_missing_data_is_one_line(tiny_checkpoint, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_checkpoint), "--data", str(tmp_path / "nope.bin"),
                 "--protocol", "bin"]) == 2
    assert capsys.readouterr().err.startswith("error: .bin file not found")
