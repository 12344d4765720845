"""Issue 14: what a hostile or careless user broke in the gallery and its commands. Each test
reproduces one finding (and failed before the fix): crafted imports, an export over the gallery,
erasure blocked by a reader, a killed export's temporary, files that are not galleries, read-only
galleries, generic error lines, unchecked numeric flags, spoofing names."""
from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lafs_edge.errors import UserError
from lafs_edge.gallery import ErasureIncomplete, Gallery, Shot, person_match
from testkit import one_error_line, png, unit

pytestmark = pytest.mark.device

MODEL_A = "a" * 64


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture()
def gallery_file(tmp_path) -> Path:
    path = tmp_path / "people.db"
    with Gallery(path) as gallery:
        gallery.enroll("ann", [Shot(unit(1), "a1", png(1)), Shot(unit(2), "a2")], MODEL_A, "m")
        gallery.enroll("bob", [Shot(unit(3), "b1", png(3))], MODEL_A, "m")
    return path


def contents(path: Path):
    with Gallery(path, readonly=True) as gallery:
        vectors, names = gallery.embeddings()
        return [(p.name, p.shots) for p in gallery.people()], names, vectors.tobytes()


def export_document(cli, gallery_file: Path) -> dict:
    out = gallery_file.with_name("export.json")
    assert cli("gallery", "export", out, "--gallery", gallery_file)[0] == 0
    return json.loads(out.read_text())


# --- 1. import checks every record before the transaction -----------------------------------

def _set_shot(field: str, value):
    def mutate(document):
        document["people"][0]["shots"][0][field] = value
    return mutate


def _drop_shot_key(field: str):
    def mutate(document):
        del document["people"][0]["shots"][0][field]
    return mutate


def _set_person(field: str, value):
    def mutate(document):
        document["people"][0][field] = value
    return mutate


CRAFTED = {   # what was changed -> a fragment of the refusal
    "vector x100": (_set_shot("vector", b64((unit(9) * 100).tobytes())), "not unit length"),
    "NaN vector": (_set_shot("vector", b64(np.full(64, np.nan, np.float32).tobytes())), "NaN"),
    "short vector": (_set_shot("vector", b64(unit(9)[:10].tobytes())), "needs 256"),
    "10-d vector": (lambda d: d["people"][0]["shots"][0].update(
        vector=b64(unit(9, 10).tobytes()), dim=10), "the gallery/model uses 64-d"),
    "no vector": (_drop_shot_key("vector"), "vector must be a base64 string"),
    "dim a string": (_set_shot("dim", "64"), "'dim' must be a positive integer"),
    "vector not base64": (_set_shot("vector", "***"), "not valid base64"),
    "crop not PNG": (_set_shot("crop_png", b64(b"GIF89a junk")), "not a valid PNG"),
    "created NaN": (_set_shot("created", "yesterday"), "created must be a finite number"),
    "quality a list": (_set_shot("quality", [1, 2]), "'quality' must be an object"),
    "RLO name": (_set_person("name", "ann\u202eevil"), "U+202E"),
    "name a number": (_set_person("name", 7), "name must be a string"),
    "shots empty": (_set_person("shots", []), "'shots' must be a non-empty list"),
    "people a dict": (lambda d: d.update(people={}), "'people' must be a non-empty list"),
    "no fingerprint": (lambda d: d.pop("fingerprint"), "fingerprint must be a string"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_import_refuses_a_crafted_export_whole(cli, gallery_file, tmp_path, case):
    mutate, fragment = CRAFTED[case]
    document = export_document(cli, gallery_file)
    mutate(document)
    crafted = tmp_path / "crafted.json"
    crafted.write_text(json.dumps(document))
    before = contents(gallery_file)
    code, _, err = cli("gallery", "import", crafted, "--gallery", gallery_file)
    assert code == 2
    line = one_error_line(err, fragment, "nothing imported")
    if case not in ("people a dict", "no fingerprint"):
        assert "people[0]" in line    # names the first bad record
    assert contents(gallery_file) == before
    code, _, err = cli("gallery", "import", crafted, "--gallery", tmp_path / "new.db")
    assert code == 2 and not (tmp_path / "new.db").exists()   # item 8: nothing created


def test_a_scaled_vector_no_longer_makes_an_impostor_match_everyone(cli, gallery_file, tmp_path):
    """The attack itself: an `impostor` whose vector is x100 outscored every real person."""
    document = export_document(cli, gallery_file)
    document["people"] = [{"name": "impostor", "created": 0, "shots": [
        {"vector": b64((unit(50) * 100).tobytes()), "dim": 64, "quality": {}, "crop_png": None,
         "source": "x", "created": 0}]}]
    crafted = tmp_path / "impostor.json"
    crafted.write_text(json.dumps(document))
    assert cli("gallery", "import", crafted, "--gallery", gallery_file)[0] == 2
    with Gallery(gallery_file, readonly=True) as gallery:
        assert [m.name for m in gallery.identify(np.stack([unit(1), unit(3)]), MODEL_A, 0.5)] == \
            ["ann", "bob"]


# --- 2. an export never overwrites the gallery ----------------------------------------------

@pytest.mark.parametrize("target", ["itself", "symlink", "hardlink", "wal", "shm", "folder"])
def test_export_refuses_the_gallery_its_files_and_folders(cli, gallery_file, tmp_path, target):
    out = {"itself": gallery_file, "symlink": tmp_path / "link.json",
           "hardlink": tmp_path / "hard.json", "wal": Path(f"{gallery_file}-wal"),
           "shm": Path(f"{gallery_file}-shm"), "folder": tmp_path}[target]
    if target == "symlink":
        out.symlink_to(gallery_file)
    elif target == "hardlink":
        os.link(gallery_file, out)
    before = contents(gallery_file)
    code, _, err = cli("gallery", "export", out, "--gallery", gallery_file)
    assert code == 2
    one_error_line(err, "folder" if target == "folder" else "would destroy it")
    assert contents(gallery_file) == before
    with Gallery(gallery_file, readonly=True) as gallery:
        assert gallery.integrity_check() == "ok"


# --- 4. erasure is real or reported as not done ---------------------------------------------

def test_delete_says_when_a_reader_keeps_the_data_and_a_rerun_finishes(cli, gallery_file):
    secret = unit(3).tobytes()
    reader = sqlite3.connect(gallery_file, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM embeddings").fetchone()   # an open read: old snapshot
    code, out, err = cli("gallery", "delete", "bob", "--gallery", gallery_file,
                         "--busy-timeout", "0.3")
    assert code == 1 and "deleted" not in out
    one_error_line(err, "still in the file", "run the same delete again")
    reader.execute("COMMIT")
    reader.close()
    code, out, _ = cli("gallery", "delete", "bob", "--gallery", gallery_file)
    assert code == 0 and "finished erasing" in out
    raw = b"".join(p.read_bytes() for p in gallery_file.parent.glob("people.db*"))
    assert secret not in raw and png(3) not in raw and b"bob" not in raw
    assert contents(gallery_file)[0] == [("ann", 2)]
    code, _, err = cli("gallery", "delete", "bob", "--gallery", gallery_file)
    assert code == 2 and "no person named 'bob'" in err   # nothing pending any more


def test_library_delete_raises_erasure_incomplete(gallery_file):
    reader = sqlite3.connect(gallery_file, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM people").fetchone()
    with Gallery(gallery_file, timeout=0.2) as gallery:
        with pytest.raises(ErasureIncomplete):
            gallery.delete("ann")
        reader.execute("COMMIT")
        assert gallery.delete("ann") == 0     # finishes the pending erasure
        assert [p.name for p in gallery.people()] == ["bob"]


# --- 5. temporaries of a killed export --------------------------------------------------------

def test_export_removes_the_temporary_a_killed_export_left(cli, gallery_file, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".out.json.tmp{dead}"
    stale.write_bytes(b'{"format": "lafs-edge-gallery-export/1", "people": [half')
    running = tmp_path / f".out.json.tmp{os.getppid()}"   # a live process's: not ours to remove
    running.write_bytes(b"in progress")
    assert cli("gallery", "export", tmp_path / "out.json", "--gallery", gallery_file)[0] == 0
    assert not stale.exists() and running.exists()
    assert json.loads((tmp_path / "out.json").read_text())["people"][0]["name"] == "ann"


# --- 8. files that are not galleries are never modified ----------------------------------------

def _foreign_sqlite(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.execute("INSERT INTO notes VALUES ('not a gallery')")
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("kind", ["other sqlite", "empty file"])
def test_files_that_are_not_galleries_are_left_untouched(cli, gallery_file, tmp_path, kind):
    target = tmp_path / "other.db"
    if kind == "other sqlite":
        _foreign_sqlite(target)
    else:
        target.touch()
    before = target.read_bytes()
    export = tmp_path / "ok.json"
    assert cli("gallery", "export", export, "--gallery", gallery_file)[0] == 0
    for args in (("gallery", "list"), ("gallery", "import", export), ("gallery", "delete", "ann"),
                 ("gallery", "export", tmp_path / "x.json"), ("adapt", "--remove")):
        code, _, err = cli(*args, "--gallery", target)
        assert code == 2, args
        one_error_line(err, "is not a lafs-edge gallery")
        assert target.read_bytes() == before, args     # not switched to WAL, no tables written
        assert not Path(f"{target}-wal").exists()


# --- 9 and 10. read-only galleries ------------------------------------------------------------

def cli_without_root_powers(*args) -> subprocess.CompletedProcess:
    """Root ignores file permissions; under root the command runs without the capabilities
    that bypass them (setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH)."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, sys.executable, "-m", "lafs_edge.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture()
def read_only(tmp_path):
    """Make paths read-only for the test; writable again afterwards (so tmp_path is cleaned)."""
    changed = []

    def make(path: Path, mode: int) -> None:
        changed.append(path)
        path.chmod(mode)
    yield make
    for path in changed:
        path.chmod(0o700)


def test_a_gallery_in_a_read_only_folder_can_be_listed_and_exported(tmp_path, read_only):
    folder = tmp_path / "ro"
    folder.mkdir()
    gallery = folder / "people.db"
    with Gallery(gallery) as g:
        g.enroll("ann", [Shot(unit(1))], MODEL_A, "m")
    read_only(folder, 0o555)
    listed = cli_without_root_powers("gallery", "list", "--gallery", gallery)
    assert listed.returncode == 0, listed.stderr
    assert "ann\t1 shot(s)" in listed.stdout and not listed.stderr
    exported = cli_without_root_powers("gallery", "export", tmp_path / "out.json",
                                       "--gallery", gallery)
    assert exported.returncode == 0, exported.stderr
    changed = cli_without_root_powers("gallery", "delete", "ann", "--gallery", gallery)
    assert changed.returncode == 2
    one_error_line(changed.stderr, "is read-only", "not changed")
    assert sorted(p.name for p in folder.iterdir()) == ["people.db"]


def test_a_read_only_gallery_file_is_one_clear_line(cli, gallery_file, tmp_path, read_only):
    export = export_document(cli, gallery_file) and gallery_file.with_name("export.json")
    read_only(gallery_file, 0o400)
    result = cli_without_root_powers("gallery", "import", export, "--gallery", gallery_file)
    assert result.returncode == 2
    one_error_line(result.stderr, "is read-only")


# --- 10. other generic error lines ------------------------------------------------------------

def test_a_locked_gallery_is_a_busy_sentence(cli, gallery_file):
    writer = sqlite3.connect(gallery_file, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        code, _, err = cli("gallery", "delete", "ann", "--gallery", gallery_file,
                           "--busy-timeout", "0.2")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert code == 2
    one_error_line(err, "is busy", "try again")


def test_data_pack_onto_an_existing_file_is_one_sentence(cli, shared_data, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should go")
    code, _, err = cli("data", "pack", shared_data / "orl", "--format", "recordio",
                       "--out", blocker)
    assert code == 2
    one_error_line(err, str(blocker), "already exists")
    assert "Errno" not in err and "FileExistsError" not in err


def test_a_garbage_model_file_is_one_sentence(cli, gallery_file, tmp_path):
    from lafs_edge.runtime.manifest import InputSpec, Manifest, write_manifest
    from lafs_edge.hashing import sha256_file

    folder = tmp_path / "garbage"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(os.urandom(4096))
    write_manifest(Manifest(name="garbage", target="onnx", model_file="model.onnx",
                            model_sha256=sha256_file(folder / "model.onnx"),
                            input=InputSpec(shape=[-1, 3, 112, 112]), alignment={},
                            embedding_dim=64), folder)
    export = tmp_path / "e.json"
    assert cli("gallery", "export", export, "--gallery", gallery_file)[0] == 0
    code, _, err = cli("gallery", "import", export, "--gallery", tmp_path / "n.db",
                       "--model", folder)
    assert code == 2
    one_error_line(err, "cannot load the model", "rejected the file")


# --- 11. numeric flags ---------------------------------------------------------------------------

FLAGS = [   # (command, flag, value)
    ("identify", "--threshold", "nan"), ("identify", "--threshold", "-5"),
    ("identify", "--threshold", "1e308"), ("identify", "--repeat", "-1"),
    ("identify", "--threads", "1000000"), ("identify", "--threads", "-3"),
    ("enroll", "--min-sharpness", "nan"), ("enroll", "--max-yaw", "inf"),
    ("enroll", "--min-eye-distance", "-1"), ("embed", "--batch-size", "0"),
    ("embed", "--batch-size", "-1"), ("gallery list", "--busy-timeout", "-1"),
]


@pytest.mark.parametrize("command, flag, value", FLAGS)
def test_numeric_flags_are_checked(cli, tmp_path, command, flag, value):
    required = {"identify": ["photo.jpg", "--model", tmp_path, "--gallery", tmp_path / "g.db"],
                "enroll": ["ann", "photo.jpg", "--model", tmp_path, "--gallery", tmp_path / "g.db"],
                "embed": ["face.png", "--model", "part_fvit_tiny", "--out", tmp_path / "e.npy"],
                "gallery list": ["--gallery", tmp_path / "g.db"]}[command]
    code, out, err = cli(*command.split(), *required, flag, value)
    assert code == 2 and not out
    one_error_line(err, flag, value)
    assert not (tmp_path / "g.db").exists() and not (tmp_path / "e.npy").exists()


# --- 12. names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ann\u202eevil", "\u2066bob", "zoe\u200bx", "a\u2028b", "c\x7f"])
def test_names_with_invisible_or_bidirectional_characters_are_refused(cli, tmp_path, name):
    with Gallery(tmp_path / "g.db") as gallery:
        with pytest.raises(UserError, match="invalid person name"):
            gallery.enroll(name, [Shot(unit(1))], MODEL_A)
    code, _, err = cli("enroll", name, "photo.jpg", "--model", tmp_path, "--gallery",
                       tmp_path / "h.db")
    assert code == 2
    one_error_line(err, "invalid person name", "U+")
    assert name not in err     # the message shows the code point, never the raw control


def test_joiners_that_scripts_need_are_kept(tmp_path):
    with Gallery(tmp_path / "g.db") as gallery:
        gallery.enroll("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", [Shot(unit(1))], MODEL_A)
        assert len(gallery.people()) == 1


def test_person_match_scores_new_shots_against_the_person(tmp_path):
    with Gallery(tmp_path / "g.db") as gallery:
        gallery.enroll("ann", [Shot(unit(1)), Shot(unit(2))], MODEL_A)
        assert person_match(gallery, "nobody", unit(1)[None]) is None
        assert person_match(gallery, "ann", unit(2) * 5) == pytest.approx(1.0, abs=1e-5)
        assert person_match(gallery, "ann", np.stack([unit(3), unit(4)])) < 0.5
