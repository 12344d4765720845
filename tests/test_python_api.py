"""`lafs_edge.FaceRecognizer` and the one match path under it (`Recognizer.match`,
`Recognizer.check_enrollment`), on the packaged photos (apps/group_photos.py) with the shipped
students: the API, one name per face in a frame, the same face under a second name, the
gallery's own model, and readers refusing a gallery that does not exist."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def photos():
    from lafs_edge.apps.group_photos import fetch_photos
    from lafs_edge.errors import UserError

    try:
        return fetch_photos(log=lambda message: None)
    except UserError as e:
        pytest.skip(f"the demo photos cannot be fetched here: {e}")


@pytest.fixture(scope="module")
def ava(photos, mediapipe_models, tmp_path_factory):
    """Ava's enrollment photo: face 2 of sample1.jpg with the others greyed out."""
    from lafs_edge.apps.quickstart import enrollment_photo
    from lafs_edge.landmarks import FaceAnalyzer

    return enrollment_photo(photos / "sample1.jpg", 2, FaceAnalyzer(),
                            tmp_path_factory.mktemp("ava") / "ava.jpg")


def left_to_right(identities):
    return [i.name or "unknown" for i in sorted(identities, key=lambda i: i.box[0])]


def test_import_lafs_edge_keeps_the_api_lazy():
    import subprocess
    import sys

    code = ("import sys, lafs_edge; assert 'lafs_edge.face_recognizer' not in sys.modules; "
            "from lafs_edge import FaceRecognizer; print(FaceRecognizer.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lafs_edge.face_recognizer"


def test_face_recognizer_on_the_packaged_photos(photos, ava, mediapipe_models):
    """The README's three lines, and detect/embed/compare, with the shipped default student."""
    from lafs_edge import FaceRecognizer
    from lafs_edge.apps.group_photos import expected_names
    from lafs_edge.image import read_image

    with FaceRecognizer() as faces:
        assert faces.enroll("Ava", [ava]) == 1
        assert faces.enroll("Obama", read_image(photos / "obama.jpg")) == 1   # an RGB array
        assert sorted(faces.people()) == ["Ava", "Obama"]
        for photo in ("sample3.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
            found = faces.identify(photos / photo)
            assert left_to_right(found) == expected_names(photo, len(found)), photo
        detected = faces.detect(photos / "sample1.jpg")
        assert len(detected) == 3 and detected[0].points.shape == (5, 2)
        assert detected[0].box.shape == (4,) and set(detected[0].quality) == {
            "eye_distance", "sharpness", "yaw"}
        vectors = faces.embed(photos / "sample1.jpg", detected[:2])
        assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        same = faces.compare(photos / "obama.jpg", photos / "obama2.jpg")
        other = faces.compare(photos / "obama.jpg", photos / "biden.jpg")
        assert same.same and not other.same and same.threshold == faces.threshold
        assert other.cosine < faces.threshold <= same.cosine


def test_the_gallery_file_is_shared_with_the_cli(photos, mediapipe_models, cli, tmp_path):
    from lafs_edge import FaceRecognizer
    from lafs_edge.errors import UserError

    gallery = tmp_path / "people.db"
    with pytest.raises(UserError, match="no gallery"):   # reading never creates one
        FaceRecognizer(gallery=gallery).identify(photos / "obama2.jpg")
    assert not gallery.exists()
    with FaceRecognizer(gallery=gallery) as faces:
        faces.enroll("Obama", [photos / "obama.jpg"])
    code, out, _ = cli("identify", photos / "obama3.jpg", "--gallery", gallery)
    assert code == 0 and " Obama " in out


def test_each_person_names_at_most_one_face_per_frame(photos, ava, mediapipe_models):
    """Item 6: with a threshold every face passes, all three faces of sample3 would be "Ava";
    only the best-scoring one (the real Ava, face 1 from the left) keeps the name, in the API
    and in the demo (which now matches through the same Recognizer.match)."""
    from lafs_edge import FaceRecognizer
    from lafs_edge.apps.demo import Demo
    from lafs_edge.image import read_image

    with FaceRecognizer(threshold=-1.0) as faces:
        faces.enroll("Ava", [ava])
        found = faces.identify(photos / "sample3.jpg")
        assert left_to_right(found) == ["unknown", "Ava", "unknown"]
        assert all(i.best == "Ava" for i in found)
        demo = Demo(faces._recognizer)
        frame = demo.process(read_image(photos / "sample3.jpg"), 0.0)
        assert sorted(f.name or "unknown" for f in frame.faces) == ["Ava", "unknown", "unknown"]


def test_one_face_per_person_keeps_the_best_score():
    from lafs_edge.gallery import Match
    from lafs_edge.gallery.pipeline import one_face_per_person

    matches = [Match("ava", 0.38, "ava"), Match("ava", 0.61, "ava"), Match("bo", 0.5, "bo"),
               Match(None, 0.1, "bo")]
    assert [m.name for m in one_face_per_person(matches)] == [None, "ava", "bo", None]
    assert one_face_per_person(matches)[0] == Match(None, 0.38, "ava")


def test_the_same_face_under_another_name_is_refused(photos, mediapipe_models, cli, tmp_path):
    """Item 3: `enroll "Joseph Biden" biden.jpg` after "Joe Biden" names the person it matches;
    --allow-lookalike insists (with a warning); the API refuses the same way."""
    from lafs_edge import FaceRecognizer
    from lafs_edge.errors import UserError

    gallery = tmp_path / "people.db"
    assert cli("enroll", "Joe Biden", photos / "biden.jpg", "--gallery", gallery)[0] == 0
    code, out, err = cli("enroll", "Joseph Biden", photos / "biden.jpg", "--gallery", gallery)
    assert code == 2 and "'Joe Biden'" in err and "--allow-lookalike" in err
    assert len(err.strip().splitlines()) == 1
    assert "Joseph Biden" not in cli("gallery", "list", "--gallery", gallery)[1]
    code, out, err = cli("enroll", "Joseph Biden", photos / "biden.jpg", "--gallery", gallery,
                         "--allow-lookalike")
    assert code == 0 and "warning:" in err and "'Joe Biden'" in err
    with FaceRecognizer(gallery=gallery) as faces:
        with pytest.raises(UserError, match="Joe Biden"):
            faces.enroll("Jo", [photos / "biden.jpg"])
        with pytest.warns(UserWarning, match="Joe Biden"):
            faces.enroll("Jo", [photos / "biden.jpg"], allow_lookalike=True)


def test_readers_use_the_model_the_gallery_was_enrolled_with(photos, mediapipe_models, cli,
                                                              tmp_path):
    """Item 4: the gallery records its --model; `gallery list` shows it, identify without
    --model uses it, and a wrong --model is told which one to pass."""
    gallery = tmp_path / "people.db"
    assert cli("enroll", "Obama", photos / "obama.jpg", "--model", "part_fvit_tiny",
               "--gallery", gallery)[0] == 0
    listing = cli("gallery", "list", "--gallery", gallery)[1]
    assert "--model part_fvit_tiny" in listing
    code, out, err = cli("identify", photos / "obama2.jpg", "--gallery", gallery)
    assert code == 0 and "Obama" in out, err     # matched in part_fvit_tiny's space
    code, _, err = cli("identify", photos / "obama2.jpg", "--model", "mobilefacenet",
                       "--gallery", gallery)
    assert code == 2 and "use --model part_fvit_tiny" in err


def test_demo_refuses_a_gallery_that_does_not_exist(photos, mediapipe_models, cli, tmp_path):
    """Item 5: a mistyped --gallery is an error, not a new empty database calling everyone
    unknown; --create-gallery starts one on purpose."""
    missing = tmp_path / "peple.db"
    common = ("demo", "--source", photos / "obama2.jpg", "--headless", "--log",
              tmp_path / "events.jsonl", "--gallery", missing)
    code, _, err = cli(*common)
    assert code == 2 and "no gallery at" in err and not missing.exists()
    assert len(err.strip().splitlines()) == 1
    code, out, err = cli(*common, "--create-gallery")
    assert code == 0 and missing.exists(), err
