"""Shipping a trained student (lafs_edge/models/shipping.py): the weights, their index entry and
the model card, as experiments/edge_students.py --ship and the campaign write them. Every test
ships into a copy of the package's weights folder; the package's own files are never written."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from lafs_edge.hashing import sha256_file
from lafs_edge.models import checkpoint_threshold, create_model, pretrained, save_checkpoint
from lafs_edge.models.pretrained import shipped
from lafs_edge.models.shipping import ModelCard, ship_student

pytestmark = pytest.mark.models

CARD = ModelCard("cosine at FAR 1e-3 over all impostor pairs of the CelebA eval identities, "
                 "PyTorch fp32",
                 ["Distilled in a test.", "", "```", "lafs-edge train distill ...", "```", "", ""],
                 ["| model | ORL |", "|---|---|", "| mobilefacenet | 0.98 |"],
                 "For tests only.")


@pytest.fixture
def weights(tmp_path):
    """A copy of the package's weights folder to ship into."""
    folder = tmp_path / "weights"
    shutil.copytree(pretrained.WEIGHTS, folder)
    return folder


@pytest.fixture
def trained(tmp_path):
    """A training run's model.pt (fp32, with the distillation's projection beside the model),
    holding the shipped mobilefacenet's weights."""
    path = tmp_path / "run" / "model.pt"
    projection = {"weight": torch.zeros(256, 128), "bias": torch.zeros(256)}
    save_checkpoint(create_model("mobilefacenet", pretrained=True), path,
                    distill={"teacher": "face-reidentification-retail-0095", "loss": "cosine",
                             "projection": projection})
    return path


def test_shipping_reproduces_the_shipped_checkpoint_and_card_header(weights, trained):
    """Shipping the shipped student's own weights with its own threshold gives the package's
    checkpoint (the same tensors, config and threshold; the bytes differ only by torch.save's
    serialization id and the storage layout) and the card header the package's card has."""
    package_file = pretrained.weights_file("mobilefacenet")
    entry = ship_student("mobilefacenet", trained, checkpoint_threshold(package_file), CARD, weights)
    assert sha256_file(weights / entry["file"]) == entry["sha256"]
    expected = torch.load(package_file, weights_only=True)
    payload = torch.load(weights / entry["file"], weights_only=True)
    assert {k: v for k, v in payload.items() if k != "state_dict"} == \
        {k: v for k, v in expected.items() if k != "state_dict"}
    assert payload["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        assert value.dtype == payload["state_dict"][key].dtype
        assert torch.equal(value, payload["state_dict"][key]), key
    header = (pretrained.WEIGHTS / "mobilefacenet.md").read_text().split("## Training")[0]
    header = header.replace(shipped()["mobilefacenet"]["sha256"], entry["sha256"])
    assert (weights / entry["card"]).read_text().startswith(header)


def test_shipping_writes_fp16_weights_the_index_and_the_card(weights, trained, monkeypatch):
    before = shipped(weights)
    entry = ship_student("mobilefacenet", trained, 0.41234, CARD, weights)
    index = json.loads((weights / "index.json").read_text())
    assert index == {**before, "mobilefacenet": entry}   # the other students' entries are kept
    assert "threshold" not in entry                      # its one stored place is the checkpoint
    payload = torch.load(weights / entry["file"], weights_only=True)
    assert set(payload) == {"format", "arch", "config", "state_dict", "threshold"}  # no projection
    assert payload["threshold"] == 0.4123
    assert all(v.dtype == torch.float16 for v in payload["state_dict"].values() if v.is_floating_point())
    card = (weights / entry["card"]).read_text()
    assert [line for line in card.splitlines() if line.startswith("#")] == [
        "# mobilefacenet: shipped weights", "## Training", "## Accuracy", "## Terms"]
    assert entry["sha256"] in card and "Open-set threshold 0.4123 (cosine at FAR 1e-3" in card
    assert "```\n\n## Accuracy\n\n| model | ORL |" in card    # one blank line between sections
    assert card.endswith("## Terms\n\nFor tests only.\n")
    # what was shipped loads the way users load it (sha256 checked against the new index)
    monkeypatch.setattr(pretrained, "WEIGHTS", weights)
    monkeypatch.setattr(pretrained, "INDEX", weights / "index.json")
    model = create_model("mobilefacenet", pretrained=True).eval()
    reference = create_model("mobilefacenet", **payload["config"]).eval()
    reference.load_state_dict(torch.load(trained, weights_only=True)["state_dict"])
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(model(x), reference(x)).min() > 0.999


@pytest.mark.parametrize("name, threshold, error, match", [
    ("mobilefacenet", float("nan"), ValueError, "threshold must be a cosine"),
    ("mobilefacenet", 1.5, ValueError, "threshold must be a cosine"),
    ("resnet50", 0.4, ValueError, "not a registered model"),
    ("part_fvit_tiny", 0.4, ValueError, "holds a mobilefacenet model"),
])
def test_shipping_refuses_what_would_not_load(weights, trained, name, threshold, error, match):
    files = {p.name: p.read_bytes() for p in weights.iterdir()}
    with pytest.raises(error, match=match):
        ship_student(name, trained, threshold, CARD, weights)
    assert {p.name: p.read_bytes() for p in weights.iterdir()} == files   # nothing written


def test_shipping_a_missing_checkpoint_is_refused(weights, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ship_student("mobilefacenet", tmp_path / "nowhere.pt", 0.4, CARD, weights)


def test_edge_students_ships_through_the_package(weights, tmp_path, monkeypatch):
    """experiments/edge_students.py --ship writes nothing itself: its card sections go to
    ship_student, which writes the package's files (here a copy of them)."""
    import importlib
    import sys

    sys.path.insert(0, str(pretrained.WEIGHTS.parents[1] / "experiments"))
    try:
        edge_students = importlib.import_module("edge_students")
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(pretrained, "WEIGHTS", weights)
    monkeypatch.setattr(pretrained, "INDEX", weights / "index.json")
    pool = tmp_path / "pool.txt"
    pool.write_text("wild5/a.jpg\nwild5/b.jpg\n")
    monkeypatch.setattr(edge_students, "POOL_LIST", str(pool))
    out = tmp_path / "out"
    for run in ("mobilefacenet", "mobilefacenet-continued"):   # the cpu preset's two runs
        (out / run).mkdir(parents=True)
        (out / run / "metrics.jsonl").write_text('{"step": 1, "time": 0}\n{"step": 9, "time": 480}\n')
    save_checkpoint(create_model("mobilefacenet", pretrained=True),
                    out / "mobilefacenet-continued" / "model.pt")
    figures = {"orl": {"rank1_k1": 0.98, "rank1_k1_std": 0.01, "rank1_k3": 1.0},
               "yale": {"rank1_k1": 0.97, "rank1_k1_std": 0.01, "rank1_k3": 1.0},
               "celeba": {"tar_at_far_1e-3": 0.48, "tar_at_far_1e-2": 0.67}}
    rows = {"teacher-fp16": figures, "mobilefacenet-pytorch-fp32": figures,
            "part_fvit_tiny-pytorch-fp32": figures}
    edge_students.ship("mobilefacenet", out, rows, [], "cpu", 0.3859, "a test machine")
    entry = shipped(weights)["mobilefacenet"]
    assert sha256_file(weights / entry["file"]) == entry["sha256"]
    card = (weights / entry["card"]).read_text()
    assert "2 faces of wild5" in card and "Machine: a test machine" in card
    assert "| mobilefacenet | pytorch-fp32 | 0.980 (0.010)" in card
    assert "part_fvit_tiny" not in card.split("## Accuracy")[1]   # only this student's rows
    assert card.endswith(edge_students.TERMS + "\n")


def test_a_package_reuses_the_exports_of_a_student_that_did_not_change(tmp_path):
    """edge_students.py --package after a ship of one student: the other one's exports and
    verify reports come from the earlier package's folder; the shipped one is exported anew."""
    import importlib
    import sys

    sys.path.insert(0, str(pretrained.WEIGHTS.parents[1] / "experiments"))
    try:
        edge_students = importlib.import_module("edge_students")
    finally:
        sys.path.pop(0)
    digests = {s: shipped()[s]["sha256"][:8] for s in edge_students.STUDENTS}
    first, second = edge_students.STUDENTS
    earlier = tmp_path / f"{digests[first]}-00000000" / "artifacts"   # `second` shipped since
    for student in edge_students.STUDENTS:
        (earlier / f"{student}-openvino-int8").mkdir(parents=True)
        (earlier / f"{student}-openvino-int8" / "manifest.json").write_text("{}")
        (earlier / f"{student}-openvino-int8.verify.json").write_text('{"passed": true}')
    (earlier / f"{first}-tflite-int8").mkdir()                   # an export that did not finish
    folder = edge_students.package_students(tmp_path)
    assert folder.name == f"{digests[first]}-{digests[second]}"
    artifacts = folder / "artifacts"
    assert (artifacts / f"{first}-openvino-int8" / "manifest.json").read_text() == "{}"
    assert json.loads((artifacts / f"{first}-openvino-int8.verify.json").read_text())["passed"]
    assert not (artifacts / f"{first}-tflite-int8").exists()
    assert not list(artifacts.glob(f"{second}-*"))
    assert (folder / second / "model.pt").is_file()


# --- the default student: best CelebA TAR@FAR1e-3 within the latency target ----------------------

def index_with(monkeypatch, folder, entries: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.json").write_text(json.dumps(entries))
    monkeypatch.setattr(pretrained, "INDEX", folder / "index.json")


@pytest.mark.parametrize("entries, expected", [
    # the more accurate student is too slow: the best one within the target
    ({"mobilefacenet": {"celeba_tar": 0.48, "latency_ratio": 1.05},
      "part_fvit_tiny": {"celeba_tar": 0.60, "latency_ratio": 1.81}}, "mobilefacenet"),
    # both within: the more accurate
    ({"mobilefacenet": {"celeba_tar": 0.48, "latency_ratio": 1.05},
      "part_fvit_tiny": {"celeba_tar": 0.60, "latency_ratio": 1.5}}, "part_fvit_tiny"),
    # none within: the fastest
    ({"mobilefacenet": {"celeba_tar": 0.48, "latency_ratio": 1.7},
      "part_fvit_tiny": {"celeba_tar": 0.60, "latency_ratio": 1.6}}, "part_fvit_tiny"),
    # a student without figures is never picked over one with them
    ({"mobilefacenet": {}, "part_fvit_tiny": {"celeba_tar": 0.30, "latency_ratio": 1.4}},
     "part_fvit_tiny"),
])
def test_the_default_student_is_the_most_accurate_within_the_latency_target(
        monkeypatch, tmp_path, entries, expected):
    from lafs_edge.runtime.shipped import default_student

    index_with(monkeypatch, tmp_path / "weights", entries)
    assert default_student() == expected


def test_no_shipped_student_is_a_user_error(monkeypatch, tmp_path):
    from lafs_edge.errors import UserError
    from lafs_edge.runtime.shipped import default_checkpoint, default_student

    index_with(monkeypatch, tmp_path / "weights", {})
    for fn in (default_student, default_checkpoint):
        with pytest.raises(UserError, match="pass --model"):
            fn()


def test_the_package_records_what_picks_its_default_student():
    from lafs_edge.runtime.shipped import LATENCY_TARGET, default_student

    index = shipped()
    assert all({"celeba_tar", "latency_ratio"} <= entry.keys() for entry in index.values())
    best = default_student()
    assert index[best]["latency_ratio"] <= LATENCY_TARGET
    assert all(entry["celeba_tar"] <= index[best]["celeba_tar"] for entry in index.values()
               if entry["latency_ratio"] <= LATENCY_TARGET)


def test_figures_are_recorded_checked_and_dropped_by_a_new_ship(weights, trained):
    from lafs_edge.models.shipping import record_figures

    before = shipped(weights)["mobilefacenet"]
    entry = record_figures("mobilefacenet", {"celeba_tar": 0.51234, "latency_ratio": 1.1}, weights)
    assert entry == {**before, "celeba_tar": 0.5123, "latency_ratio": 1.1}
    assert shipped(weights)["mobilefacenet"] == entry
    for bad, match in (({"speed": 1.0}, "unknown figures"),
                       ({"celeba_tar": float("nan")}, "finite number"),
                       ({"latency_ratio": -1}, "finite number")):
        with pytest.raises(ValueError, match=match):
            record_figures("mobilefacenet", bad, weights)
    assert shipped(weights)["mobilefacenet"] == entry
    with pytest.raises(ValueError, match="not shipped"):
        record_figures("part_fvit_base", {"celeba_tar": 0.5}, weights)
    shipped_entry = ship_student("mobilefacenet", trained, 0.4, CARD, weights,
                                 figures={"celeba_tar": 0.6})
    assert shipped_entry["celeba_tar"] == 0.6 and "latency_ratio" not in shipped_entry
    assert shipped(weights)["part_fvit_tiny"] == shipped()["part_fvit_tiny"]   # others kept
