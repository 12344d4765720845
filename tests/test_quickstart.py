"""The quickstart's pieces at a reduced size: generated sample people (scikit-image only, no
../shared), detection + alignment into identity folders and a landmark list, one step of every
training stage through the CLI, and the device part (enroll, adapt, headless demo on an
assembled video) with the external model."""
from __future__ import annotations

import json

import pytest

from lafs_edge.apps import quickstart
from lafs_edge.train.data.landmarks import read_landmark_list

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, mediapipe_models):
    out = tmp_path_factory.mktemp("quickstart")
    photos = quickstart.generate_people(out / "photos", people=4, views=3)
    aligned, list_file, found = quickstart.prepare_faces(photos, out, progress=False)
    return out, photos, aligned, list_file, found


def test_sample_people_are_generated_detected_and_aligned(prepared):
    import cv2

    out, photos, aligned, list_file, found = prepared
    people = sorted(p.name for p in photos.iterdir() if p.is_dir())
    assert people == ["astronaut", "lfw00", "lfw01", "lfw02", "lfw03"]
    assert len(found) >= 4                              # MediaPipe finds (nearly) all of them
    entries = read_landmark_list(list_file)
    assert len(entries) == sum(map(len, found.values()))
    assert list_file.parent == out                      # nothing written beside the photos
    assert not list(photos.glob("*.txt"))
    for path, points in entries:                        # the list points at real photos
        assert (photos / path).is_file() and points[0, 0] < points[1, 0]
    crop = cv2.imread(str(next((aligned / "astronaut").iterdir())))
    assert crop.shape == (112, 112, 3)


def test_every_training_stage_runs_one_step(prepared, tmp_path):
    out, _, aligned, list_file, _ = prepared
    models = quickstart.train_stages(aligned, list_file, tmp_path, steps=1, batch=4)
    assert list(models) == ["supervised", "pretrain", "finetune", "distill"]
    for model in models.values():
        assert model.is_file()


def test_device_part_names_enrolled_people_and_not_the_stranger(prepared, retail_0095):
    out, _, _, _, found = prepared
    result = quickstart.run_device(retail_0095["FP16"], found, out, enroll=2, shots=1,
                                   min_sharpness=10.0)
    assert result["adapted"] == "adapted"
    assert result["frames"] == 3 * 2 * 3
    assert result["correct"] == result["frames"], result
    events = [json.loads(line) for line in result["events"].read_text().splitlines()]
    assert events[-1]["event"] == "summary"
    assert result["video"].is_file() and result["snapshot"].is_file()


def test_quickstart_bad_data_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert quickstart.main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
