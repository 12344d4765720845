"""Issue 24 (hardening round 2), items 8, 12 and 15: a delete whose erasure fails on a full disk
says the person is gone and the erasure pending; a tampered gallery (a planted trigger, orphan
shot rows) and a damaged one are refused with one line."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lafs_edge.gallery import ErasureIncomplete, Gallery, Shot
from lafs_edge.gallery.schema import TamperedGallery
from testkit import one_error_line, unit

pytestmark = pytest.mark.device

MODEL = "a" * 64


@pytest.fixture()
def gallery_file(tmp_path) -> Path:
    path = tmp_path / "people.db"
    with Gallery(path) as gallery:
        gallery.enroll("ann", [Shot(unit(1), "a1"), Shot(unit(2), "a2")], MODEL, "m")
        gallery.enroll("bob", [Shot(unit(3), "b1")], MODEL, "m")
    return path


def tamper(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


# --- 8. a delete on a full disk -------------------------------------------------------------------

class FullDiskOnVacuum:
    """The gallery's connection, except that VACUUM fails as on a full disk (it needs room for
    a copy of the database)."""

    def __init__(self, connection: sqlite3.Connection):
        self._connection = connection

    def execute(self, sql: str, *args):
        if sql.strip().upper() == "VACUUM":
            raise sqlite3.OperationalError("database or disk is full")
        return self._connection.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._connection, name)


def test_a_delete_whose_erasure_fails_says_what_happened(gallery_file):
    with Gallery(gallery_file) as gallery:
        gallery._connection = FullDiskOnVacuum(gallery._connection)  # type: ignore[assignment]
        with pytest.raises(ErasureIncomplete) as caught:
            gallery.delete("ann")
        message = str(caught.value)
        assert "removed from" in message and "disk is full" in message
        assert "run the same delete again" in message and "nothing was changed" not in message
        gallery._connection = gallery._connection._connection
        assert [p.name for p in gallery.people()] == ["bob"]
        assert gallery.delete("ann") == 0   # the rerun finishes the erasure
        assert gallery._meta("erasure_pending") is None


# --- 15. a tampered gallery -----------------------------------------------------------------------

TAMPERING = {
    "trigger keeping deleted rows": (
        "CREATE TABLE loot (vector BLOB)",
        "CREATE TRIGGER keep BEFORE DELETE ON embeddings BEGIN "
        "INSERT INTO loot VALUES (old.vector); END"),
    "view": ("CREATE VIEW everyone AS SELECT * FROM people",),
    "changed table": ("DROP INDEX embeddings_person",
                      "ALTER TABLE embeddings RENAME TO e_old",
                      "CREATE TABLE embeddings (id INTEGER PRIMARY KEY, person_id INTEGER, "
                      "fingerprint TEXT, dim INTEGER, vector BLOB, quality TEXT, crop_png BLOB, "
                      "source TEXT, created REAL)",
                      "INSERT INTO embeddings SELECT * FROM e_old", "DROP TABLE e_old",
                      "CREATE INDEX embeddings_person ON embeddings(person_id)"),
    "orphan shots": ("INSERT INTO embeddings (person_id, fingerprint, dim, vector, created) "
                     "SELECT 99, fingerprint, dim, vector, created FROM embeddings LIMIT 1",),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_tampered_gallery_is_refused_with_one_line(cli, gallery_file, case):
    tamper(gallery_file, *TAMPERING[case])
    before = gallery_file.read_bytes()
    for args in (("gallery", "list"), ("gallery", "delete", "ann")):
        code, out, err = cli(*args, "--gallery", gallery_file)
        assert code == 2 and out == ""
        one_error_line(err, "was changed outside lafs-edge")
    with pytest.raises(TamperedGallery):
        Gallery(gallery_file, readonly=True)
    assert gallery_file.read_bytes() == before


def test_an_adapted_gallery_is_not_mistaken_for_a_tampered_one(gallery_file):
    from lafs_edge.gallery.adapt import ADAPTERS_TABLE

    tamper(gallery_file, ADAPTERS_TABLE)
    with Gallery(gallery_file) as gallery:
        assert len(gallery.people()) == 2


# --- 12. a damaged gallery ------------------------------------------------------------------------

def test_a_damaged_gallery_is_one_sentence(cli, tmp_path):
    path = tmp_path / "big.db"
    with Gallery(path) as gallery:
        for number in range(60):
            gallery.enroll(f"p{number}", [Shot(unit(number), "s", b"\x89PNG" + bytes(3000))],
                           MODEL, "m")
        gallery.erase()
    db = sqlite3.connect(path)
    roots = [row[0] for row in db.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = "
                                          "'embeddings' AND rootpage > 0")]
    page = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray(path.read_bytes())
    for root in roots:   # the root pages of the shots' table and of its index
        data[(root - 1) * page: root * page] = b"\xff" * page
    path.write_bytes(bytes(data))
    for args in (("gallery", "list"), ("gallery", "export", tmp_path / "out.json")):
        code, _, err = cli(*args, "--gallery", path)
        assert code != 0
        line = one_error_line(err)
        assert "DatabaseError" not in line and "damaged" in line, line
