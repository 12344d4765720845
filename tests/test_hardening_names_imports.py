"""Issue 24 (hardening round 2), items 3, 5 and 7, and issue 22 item 2: one name rule (NFC,
casefold, nothing invisible or blank, a warning for look-alikes), and enrolment's rules (same
person, vector size, model) applied inside the write transaction to enroll and import alike."""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from lafs_edge.errors import UserError
from lafs_edge.gallery import Gallery, Shot
from lafs_edge.gallery.names import check_name, name_key
from lafs_edge.gallery.rules import DimensionMismatch, NotThePerson
from testkit import one_error_line, unit

pytestmark = pytest.mark.device

MODEL = "a" * 64
THRESHOLD = 0.3


def near(vector: np.ndarray, seed: int) -> np.ndarray:
    """Another shot of the same person: cosine about 0.9 with `vector`."""
    moved = vector + 0.45 * unit(seed, len(vector))
    return moved / np.linalg.norm(moved)


@pytest.fixture()
def gallery_file(tmp_path) -> Path:
    path = tmp_path / "people.db"
    with Gallery(path) as gallery:
        gallery.enroll("alice", [Shot(unit(1), "a1")], MODEL, "m", threshold=THRESHOLD)
        gallery.enroll("bob", [Shot(unit(2), "b1")], MODEL, "m", threshold=THRESHOLD)
    return path


def export_of(path: Path, out: Path) -> dict:
    with Gallery(path, readonly=True) as gallery:
        gallery.export(out)
    return json.loads(out.read_text())


# --- 7. names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["alice\u200d", "\u200dalice", "\u3164", "alice\u3164",
                                  "\u2800", "\u0301\u0308", "  \u0301 "])
def test_invisible_blank_and_combining_only_names_are_refused(name):
    with pytest.raises(UserError, match="invalid person name"):
        check_name(name)


@pytest.mark.parametrize("name", ["\u0645\u06cc\u200c\u062e\u0648\u0627\u0645",   # Persian ZWNJ
                                  "\U0001f469\u200d\U0001f4bb", "José", "Zoë O'Neil"])
def test_names_that_scripts_need_are_kept(name):
    assert check_name(name) == name


def test_one_person_whatever_the_case_and_the_unicode_form(tmp_path):
    """Issue 22 item 2: `enroll "barack obama"` lands on "Barack Obama"; NFD "José" on NFC."""
    with Gallery(tmp_path / "g.db") as gallery:
        first = unit(1)
        gallery.enroll("Barack  Obama", [Shot(first, "1")], MODEL, "m", threshold=THRESHOLD)
        result = gallery.enroll("barack obama", [Shot(near(first, 5), "2")], MODEL, "m",
                                threshold=THRESHOLD)
        assert result.name == "Barack Obama"
        gallery.enroll("Jos\u00e9", [Shot(unit(3), "1")], MODEL, "m")
        gallery.enroll("Jose\u0301", [Shot(near(unit(3), 6), "2")], MODEL, "m")
        assert [(p.name, p.shots) for p in gallery.people()] == [("Barack Obama", 2),
                                                                 ("José", 2)]
        assert len(gallery.embeddings("BARACK OBAMA")[0]) == 2
        assert gallery.delete("josé") == 2
    assert name_key("Jose\u0301") == name_key("JOSÉ")


def test_a_look_alike_name_is_warned_about(tmp_path, caplog):
    with Gallery(tmp_path / "g.db") as gallery, caplog.at_level(logging.WARNING):
        gallery.enroll("alice", [Shot(unit(1), "1")], MODEL, "m")
        gallery.enroll("\u0430lice", [Shot(unit(2), "1")], MODEL, "m")   # Cyrillic a
        assert len(gallery.people()) == 2
    assert "looks like the enrolled 'alice'" in caplog.text


# --- 5. the same-person check inside the write transaction -----------------------------------------

def test_concurrent_enrollments_under_one_new_name_cannot_both_land(tmp_path):
    """Both processes opened the gallery when "twin" did not exist; the second to write must
    see the first one's shots."""
    path = tmp_path / "g.db"
    first, second = Gallery(path), Gallery(path)
    try:
        first.enroll("twin", [Shot(unit(1), "ann.jpg")], MODEL, "m", threshold=THRESHOLD)
        with pytest.raises(NotThePerson, match="'twin' is already enrolled"):
            second.enroll("twin", [Shot(unit(2), "bob.jpg")], MODEL, "m", threshold=THRESHOLD)
        assert second.people()[0].shots == 1
        result = second.enroll("twin", [Shot(unit(2), "bob.jpg")], MODEL, "m",
                               threshold=THRESHOLD, allow_mismatch=True)
        assert result.mismatch is not None and result.mismatch < THRESHOLD
    finally:
        first.close()
        second.close()


# --- 3. import under enrolment's rules ------------------------------------------------------------

def test_a_renamed_export_of_someone_else_is_refused(cli, gallery_file, tmp_path):
    other = tmp_path / "other.db"
    with Gallery(other) as gallery:
        gallery.enroll("bob", [Shot(unit(7), "b")], MODEL, "m", threshold=THRESHOLD)
    document = export_of(other, tmp_path / "bob.json")
    document["people"][0]["name"] = "Alice"
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(document))
    code, _, err = cli("gallery", "import", renamed, "--gallery", gallery_file)
    assert code == 2
    one_error_line(err, "'alice' is already enrolled", "do not match")
    with Gallery(gallery_file, readonly=True) as gallery:
        assert [(p.name, p.shots) for p in gallery.people()] == [("alice", 1), ("bob", 1)]


def test_reimporting_the_same_person_still_merges(cli, gallery_file, tmp_path):
    document = export_of(gallery_file, tmp_path / "self.json")
    shot = document["people"][0]["shots"][0]
    shot["vector"] = base64.b64encode(near(unit(1), 9).tobytes()).decode()
    again = tmp_path / "again.json"
    again.write_text(json.dumps(document))
    code, out, err = cli("gallery", "import", again, "--gallery", gallery_file)
    assert code == 0, err
    assert "imported 1 shot(s)" in out


def test_the_same_person_twice_in_one_file_is_refused(cli, gallery_file, tmp_path):
    document = export_of(gallery_file, tmp_path / "e.json")
    document["people"][1]["name"] = "ALICE"
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps(document))
    code, _, err = cli("gallery", "import", twice, "--gallery", gallery_file)
    assert code == 2
    one_error_line(err, "people[1] ('ALICE') is people[0] ('alice') again")


def test_another_size_under_the_gallerys_fingerprint_is_refused(tmp_path):
    """Vectors of 128 values carrying the fingerprint of a gallery bound to 64: refused at the
    write, not by every identify afterwards."""
    path = tmp_path / "g.db"
    with Gallery(path) as gallery:
        gallery.enroll("alice", [Shot(unit(1, 128), "a")], MODEL, "m")
        with pytest.raises(DimensionMismatch, match="64-d embeddings, the gallery holds 128-d"):
            gallery.enroll("carol", [Shot(unit(3, 64), "c")], MODEL, "m")
        assert gallery.embedding_dim() == 128


def test_vectors_of_another_size_than_the_fingerprints_model_are_refused(cli, tmp_path,
                                                                        tiny_artifact):
    from lafs_edge.runtime.embedder import Embedder

    embedder = Embedder.from_artifact(tiny_artifact)
    wrong = embedder.embedding_dim * 2
    source = tmp_path / "source.db"
    with Gallery(source) as gallery:   # the model's fingerprint, vectors twice its size
        gallery.enroll("mallory", [Shot(unit(1, wrong), "m")], embedder.fingerprint, "tiny")
    export_of(source, tmp_path / "wrong.json")
    code, _, err = cli("gallery", "import", tmp_path / "wrong.json", "--gallery",
                       tmp_path / "new.db", "--model", tiny_artifact)
    assert code == 2
    one_error_line(err, f"{wrong}-d embeddings, the model tiny (fp32) computes "
                        f"{embedder.embedding_dim}-d")
    assert not (tmp_path / "new.db").exists()
