"""`lafs-edge enroll / identify / gallery ...` end to end on real photos, and bad input: one clear
line, a non-zero exit, and the gallery exactly as it was."""
from __future__ import annotations

import os

import pytest

from lafs_edge.cli import main
from lafs_edge.gallery import Gallery

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def orl(shared_data):
    return lambda person, photo: str(shared_data / "orl" / f"s{person}" / f"{photo}.pgm")


@pytest.fixture()
def cli(capsys, mediapipe_models):
    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture()
def enrolled(cli, orl, retail_0095, tmp_path):
    gallery = tmp_path / "people.db"
    fp16 = retail_0095["FP16"]
    code, out, _ = cli("enroll", "alice", orl(1, 1), orl(1, 2), orl(1, 3), "--model", fp16,
                       "--gallery", gallery)
    assert code == 0 and "enrolled alice: 3 shot(s) added" in out
    code, out, _ = cli("enroll", "bob", orl(2, 1), "--model", fp16, "--gallery", gallery)
    assert code == 0 and "enrolled bob: 1 shot(s) added, 1 in total" in out
    return gallery


def snapshot(path):
    with Gallery(path, create=False) as gallery:
        vectors, names = gallery.embeddings()
        return [(p.name, p.shots) for p in gallery.people()], names, vectors.tobytes()


def assert_one_error_line(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_enroll_identify_list(cli, enrolled, orl, retail_0095, shared_data):
    assert (os.stat(enrolled).st_mode & 0o777) == 0o600
    code, out, _ = cli("identify", orl(1, 7), orl(2, 9), orl(3, 1), "--model", retail_0095["FP16"],
                       "--gallery", enrolled)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3
    assert " alice " in lines[0] and " bob " in lines[1]
    assert " unknown " in lines[2] and "(best " in lines[2]      # s3 was never enrolled
    code, out, _ = cli("identify", shared_data / "photos" / "sample3.jpg", "--model",
                       retail_0095["FP16"], "--gallery", enrolled, "--timings")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 4 and all(" face " in line for line in lines[:3])
    assert lines[3].startswith("timings (ms") and "detect" in lines[3] and "match" in lines[3]
    code, out, _ = cli("gallery", "list", "--gallery", enrolled)
    assert code == 0 and "alice\t3 shot(s)" in out and "bob\t1 shot(s)" in out


def test_export_import_delete(cli, enrolled, retail_0095, tmp_path):
    export = tmp_path / "people.json"
    assert cli("gallery", "export", export, "--gallery", enrolled)[0] == 0
    copy = tmp_path / "copy.db"
    code, out, _ = cli("gallery", "import", export, "--gallery", copy, "--model", retail_0095["FP16"])
    assert code == 0 and "imported 4 shot(s)" in out
    assert snapshot(copy) == snapshot(enrolled)
    code, out, _ = cli("gallery", "delete", "bob", "--gallery", enrolled)
    assert code == 0 and "deleted bob (1 shot(s))" in out
    assert snapshot(enrolled)[0] == [("alice", 3)]
    code, _, err = cli("gallery", "delete", "bob", "--gallery", enrolled)
    assert_one_error_line(code, err, "no person named 'bob'")


def test_bad_enrollment_input_changes_nothing(cli, enrolled, orl, retail_0095, shared_data, tmp_path):
    import cv2

    from lafs_edge.image import read_image, write_image

    before = snapshot(enrolled)
    fp16 = retail_0095["FP16"]
    wall = tmp_path / "wall.png"   # a real photo region without a face
    write_image(wall, read_image(shared_data / "photos" / "sample1.jpg")[0:300, 0:250])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(3000))
    blurred = tmp_path / "blurred.png"
    write_image(blurred, cv2.GaussianBlur(read_image(orl(4, 1)), (0, 0), 3))
    cases = [
        ((orl(4, 1), wall), "no face found"),
        ((orl(4, 1), shared_data / "photos" / "sample1.jpg"), "3 faces found"),
        ((orl(4, 1), corrupt), "not a readable image"),
        ((tmp_path / "missing.jpg",), "image not found"),
        ((blurred,), "passed the quality gate"),
    ]
    for images, message in cases:
        code, out, err = cli("enroll", "carol", *images, "--model", fp16, "--gallery", enrolled)
        assert_one_error_line(code, err, message)
        assert snapshot(enrolled) == before
    code, _, err = cli("enroll", "alice", orl(1, 1), "--model", fp16, "--gallery", enrolled)
    assert_one_error_line(code, err, "nothing enrolled", "near-duplicate")
    assert snapshot(enrolled) == before


def test_other_model_and_bad_files_are_refused(cli, enrolled, orl, retail_0095, tmp_path):
    before = snapshot(enrolled)
    int8 = retail_0095["FP16-INT8"]
    code, _, err = cli("identify", orl(1, 7), "--model", int8, "--gallery", enrolled)
    assert_one_error_line(code, err, "fingerprint", "cannot be compared")
    code, _, err = cli("enroll", "dave", orl(5, 1), "--model", int8, "--gallery", enrolled)
    assert_one_error_line(code, err, "fingerprint")
    other = tmp_path / "int8.db"
    assert cli("enroll", "erin", orl(6, 1), "--model", int8, "--gallery", other)[0] == 0
    assert cli("gallery", "export", tmp_path / "int8.json", "--gallery", other)[0] == 0
    code, _, err = cli("gallery", "import", tmp_path / "int8.json", "--gallery", enrolled)
    assert_one_error_line(code, err, "fingerprint")
    assert snapshot(enrolled) == before
    code, _, err = cli("identify", orl(1, 7), "--model", retail_0095["FP16"],
                       "--gallery", tmp_path / "absent.db")
    assert_one_error_line(code, err, "no gallery")
    assert not (tmp_path / "absent.db").exists()
    not_db = tmp_path / "not.db"
    not_db.write_bytes(os.urandom(2048))
    code, _, err = cli("gallery", "list", "--gallery", not_db)
    assert_one_error_line(code, err, "not a lafs-edge gallery")


def test_identify_photo_without_face(cli, enrolled, retail_0095, shared_data, tmp_path):
    from lafs_edge.image import read_image, write_image

    wall = tmp_path / "wall.png"
    write_image(wall, read_image(shared_data / "photos" / "sample1.jpg")[0:300, 0:250])
    code, out, _ = cli("identify", wall, "--model", retail_0095["FP16"], "--gallery", enrolled)
    assert code == 1 and out.strip() == f"{wall}: no face found"


def test_fetch_models_command(cli, mediapipe_models):
    code, out, _ = cli("fetch-models")
    paths = out.strip().splitlines()
    assert code == 0 and len(paths) == 3 and all(os.path.isfile(p) for p in paths)


# --- issue 14 ---------------------------------------------------------------------------------

def _artifact_copy(source, folder, **changes):
    """A copy of an artifact (model files are inside it) with some manifest fields set."""
    import json
    import shutil

    shutil.copytree(source, folder)
    data = json.loads((source / "manifest.json").read_text())
    data.update(changes)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("field", ["model_sha256", "weights_sha256"])
def test_a_blank_model_hash_is_refused(cli, retail_0095, orl, tmp_path, field):
    """A blank hash turned the integrity check off (and made two models share a fingerprint)."""
    from lafs_edge.errors import UserError
    from lafs_edge.runtime.embedder import Embedder

    folder = _artifact_copy(retail_0095["FP16"], tmp_path / "blank", **{field: ""})
    with pytest.raises(UserError, match=f"{field} must be the sha256"):
        Embedder.from_artifact(folder)
    code, _, err = cli("enroll", "zed", orl(1, 7), "--model", folder, "--gallery", tmp_path / "g.db")
    assert_one_error_line(code, err, field)
    assert not (tmp_path / "g.db").exists()


def test_the_fingerprint_comes_from_the_model_files(retail_0095, tmp_path):
    """INT8 files behind a manifest that claims the FP16 hashes get the INT8 fingerprint."""
    import json

    from lafs_edge.runtime.backends import open_runtime
    from lafs_edge.runtime.embedder import Embedder

    fp16 = json.loads((retail_0095["FP16"] / "manifest.json").read_text())
    liar = _artifact_copy(retail_0095["FP16-INT8"], tmp_path / "liar",
                          model_sha256=fp16["model_sha256"], weights_sha256=fp16["weights_sha256"])
    claimed = Embedder(open_runtime(liar, verify_sha256=False)).fingerprint
    assert claimed == Embedder.from_artifact(retail_0095["FP16-INT8"]).fingerprint
    assert claimed != Embedder.from_artifact(retail_0095["FP16"]).fingerprint


def test_a_manifest_threshold_that_is_a_string_is_one_line(cli, retail_0095, orl, tmp_path):
    folder = _artifact_copy(retail_0095["FP16"], tmp_path / "text", threshold="0.43")
    code, _, err = cli("enroll", "zed", orl(1, 7), "--model", folder, "--gallery", tmp_path / "g.db")
    assert_one_error_line(code, err, "manifest threshold must be a cosine in [-1, 1]", "'0.43'")


def test_identify_streams_one_photo_at_a_time(cli, enrolled, retail_0095, shared_data, tmp_path,
                                              monkeypatch, capsys):
    """All photos were decoded before the first result (1.07 GB for 80 large photos): now each
    result is printed before the next photo is read, and peak memory does not grow with the
    number of photos."""
    import shutil
    import tracemalloc

    import lafs_edge.image

    photos = []
    for number in range(4):
        photos.append(tmp_path / f"group{number}.jpg")
        shutil.copy(shared_data / "photos" / "sample2.jpg", photos[-1])
    read_image, printed, lines_before_read = lafs_edge.image.read_image, [], []

    def reading(path):
        printed.append(capsys.readouterr().out)
        lines_before_read.append(sum(text.count("\n") for text in printed))
        return read_image(path)

    monkeypatch.setattr(lafs_edge.image, "read_image", reading)
    arguments = ["--model", retail_0095["FP16"], "--gallery", enrolled]
    peaks = {}
    for count in (1, 4):
        lines_before_read.clear()
        tracemalloc.start()
        code = main(["identify", *map(str, photos[:count]), *map(str, arguments)])
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert code == 0
        assert lines_before_read == [0] + [3 * n for n in range(1, count)], lines_before_read
        printed.clear()
        capsys.readouterr()
    photo_bytes = read_image(photos[0]).nbytes
    assert peaks[4] - peaks[1] < photo_bytes, (peaks, photo_bytes)


def test_enrolling_another_face_under_a_taken_name_is_refused(cli, enrolled, orl, retail_0095):
    before = snapshot(enrolled)
    fp16 = retail_0095["FP16"]
    code, _, err = cli("enroll", "alice", orl(7, 1), "--model", fp16, "--gallery", enrolled)
    assert_one_error_line(code, err, "'alice' is already enrolled", "--allow-mismatch")
    assert snapshot(enrolled) == before
    code, out, _ = cli("enroll", "alice", orl(1, 5), "--model", fp16, "--gallery", enrolled)
    assert code == 0 and "enrolled alice: 1 shot(s) added, 4 in total" in out   # same person
    code, out, err = cli("enroll", "alice", orl(7, 1), "--model", fp16, "--gallery", enrolled,
                         "--allow-mismatch")
    assert code == 0 and "enrolled alice" in out
    assert err.startswith("warning: 'alice' is already enrolled") and len(err.splitlines()) == 1


def test_a_name_in_another_case_lands_on_the_enrolled_person(cli, enrolled, orl, retail_0095):
    """Issue 22 item 2: `enroll "ALICE"` adds to alice (the name stays as first enrolled)."""
    code, out, err = cli("enroll", "  ALICE ", orl(1, 4), "--model", retail_0095["FP16"],
                         "--gallery", enrolled)
    assert code == 0, err
    assert "enrolled alice: 1 shot(s) added, 4 in total" in out
    code, out, _ = cli("gallery", "list", "--gallery", enrolled)
    assert [line.split("\t")[0] for line in out.splitlines()[1:]] == ["alice", "bob"]
