"""The quickstart's pieces at a reduced size: generated sample people (scikit-image only, no
../shared), detection + alignment into identity folders and a landmark list, one step of every
training stage through the CLI, and the device part with the shipped student on the real group
photos of the face-api npm package (enroll three people from one photo each, headless demo on
the four others)."""
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


@pytest.fixture(scope="module")
def group_photos():
    from lafs_edge.apps.group_photos import fetch_photos
    from lafs_edge.errors import UserError

    try:
        return fetch_photos(log=lambda message: None)
    except UserError as e:
        pytest.skip(f"the face-api photos cannot be fetched here: {e}")


def test_group_photos_and_their_cast(group_photos):
    from lafs_edge.apps.group_photos import CAST, PHOTOS, expected_names

    assert sorted(p.name for p in group_photos.glob("*.jpg")) == sorted(PHOTOS)
    assert expected_names("sample4.jpg", 4) == ["Bea", "Cleo", "unknown", "unknown"]
    assert expected_names("sample2.jpg", 3) == ["unknown"] * 3
    assert {photo for (photo, _), _ in CAST.values()} <= {"sample1.jpg", "sample6.jpg"}


def test_enrollment_photo_shows_exactly_one_face(group_photos, face_analyzer, tmp_path):
    from lafs_edge.image import read_image

    shot = quickstart.enrollment_photo(group_photos / "sample1.jpg", 2, face_analyzer,
                                       tmp_path / "ava.jpg")
    assert len(face_analyzer.analyze(read_image(shot))) == 1
    with pytest.raises(quickstart.UserError, match="face 9 not found"):
        quickstart.enrollment_photo(group_photos / "sample1.jpg", 9, face_analyzer,
                                    tmp_path / "x.jpg")


def test_device_part_with_the_shipped_student(group_photos, mediapipe_models, tmp_path):
    """The out-of-the-box result with the shipped student's artifact, on photos the people were
    not enrolled from. Measured (docs/results.md): Ava, whose two photos the teacher matches at
    0.71, is named; Bea and Cleo (teacher 0.49 and 0.46, at its threshold 0.43) are missed and
    one stranger is taken for Bea. The test holds what is reached and fails on a regression."""
    from lafs_edge.runtime.shipped import default_artifact

    result = quickstart.run_device(default_artifact(), tmp_path)
    verdicts = result["verdicts"]
    assert len(verdicts) == 15                       # 3 + 4 + 3 + 5 faces in the four photos
    known = {truth: name for _, truth, name, _ in verdicts if truth != "unknown"}
    strangers = [name for _, truth, name, _ in verdicts if truth == "unknown"]
    assert sorted(known) == ["Ava", "Bea", "Cleo"]
    assert known["Ava"] == "Ava", verdicts
    assert strangers.count("unknown") >= len(strangers) - 1, verdicts
    events = [json.loads(line) for line in result["events"].read_text().splitlines()]
    assert events[-1]["event"] == "summary"
    assert result["video"].is_file() and result["snapshot"].is_file()


def test_quickstart_bad_data_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert quickstart.main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
