"""The quickstart's pieces at a reduced size: generated sample people (scikit-image only, no
../shared), detection + alignment into identity folders and a landmark list, one step of every
training stage through the CLI, and the device part with the shipped student on the real group
photos of the face-api npm package (enroll three people from one photo each, headless demo on
the four others)."""
from __future__ import annotations

import json

import pytest

from lafs_edge.apps import quickstart
from lafs_edge.landmark_lists import read_landmark_list

pytestmark = pytest.mark.quickstart

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


def test_every_training_stage_runs_two_steps(prepared, tmp_path, capsys):
    """...and the quickstart's table reports each stage's loss as its train command printed it
    (the table once showed step 5's loss beside a log line of steps 1 -> 8)."""
    import re

    out, _, aligned, list_file, _ = prepared
    models = quickstart.train_stages(aligned, list_file, tmp_path, steps=2, batch=4)
    assert list(models) == ["supervised", "pretrain", "finetune", "distill"]
    printed = re.findall(r"trained steps 0 -> 2 of 2: (loss \S+ -> \S+),", capsys.readouterr().out)
    assert len(printed) == 4
    for model, line in zip(models.values(), printed):
        assert model.is_file()
        assert quickstart.loss_summary(model.parent) == f"2 steps, {line}"


@pytest.fixture(scope="module")
def group_photos():
    from lafs_edge.apps.group_photos import fetch_photos
    from lafs_edge.errors import UserError

    try:
        return fetch_photos(log=lambda message: None)
    except UserError as e:
        pytest.skip(f"the demo photos cannot be fetched here: {e}")


def test_group_photos_and_their_cast(group_photos):
    from lafs_edge.apps.group_photos import CAST, ENROLLMENT_PHOTOS, PHOTOS, expected_names

    assert sorted(p.name for p in group_photos.glob("*.jpg")) == sorted(PHOTOS)
    assert expected_names("sample3.jpg", 3) == ["unknown", "Ava", "unknown"]
    assert expected_names("obama3.jpg", 1) == ["Obama"]
    assert expected_names("sample4.jpg", 4) == ["unknown"] * 4
    assert expected_names("biden.jpg", 1) == ["unknown"]
    assert {photo for (photo, _), _ in CAST.values()} == set(ENROLLMENT_PHOTOS)


def test_corrupt_cached_photo_is_fetched_again(group_photos, tmp_path):
    """A photo that no longer matches its sha256 (a cut download, an edit) is replaced from its
    package, not used."""
    import shutil

    from lafs_edge.apps.group_photos import PHOTOS, fetch_photos
    from lafs_edge.hashing import sha256_file

    folder = tmp_path / "photos"
    shutil.copytree(group_photos, folder)
    (folder / "obama2.jpg").write_bytes(b"not the photo")
    fetch_photos(folder, log=lambda message: None)
    assert sha256_file(folder / "obama2.jpg") == PHOTOS["obama2.jpg"]


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
    not enrolled from: both enrolled people named wherever they appear, the 19 other faces
    called unknown."""
    from lafs_edge.commands.artifacts import default_artifact

    result = quickstart.run_device(default_artifact(), tmp_path)
    verdicts = result["verdicts"]
    assert len(verdicts) == 22                       # the faces of the eight photos shown
    known = [(truth, name) for _, truth, name, _ in verdicts if truth != "unknown"]
    assert sorted(known) == [("Ava", "Ava"), ("Obama", "Obama"), ("Obama", "Obama")], verdicts
    assert all(name == "unknown" for _, truth, name, _ in verdicts if truth == "unknown"), verdicts
    assert quickstart.wrong_verdicts(verdicts) == []
    events = [json.loads(line) for line in result["events"].read_text().splitlines()]
    assert events[-1]["event"] == "summary"
    assert result["video"].is_file() and result["snapshot"].is_file()


def test_wrong_verdicts_are_a_missed_person_a_wrong_name_or_a_named_stranger():
    verdicts = [("sample3.jpg", "Ava", "Ava", 0.61), ("obama2.jpg", "Obama", "unknown", 0.37),
                ("sample3.jpg", "unknown", "Ava", 0.39), ("biden.jpg", "unknown", "unknown", 0.1),
                ("obama3.jpg", "Obama", "Ava", 0.45)]
    assert quickstart.wrong_verdicts(verdicts) == [verdicts[1], verdicts[2], verdicts[4]]


def test_quickstart_bad_data_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert quickstart.main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
