"""The SQLite gallery: permissions, enrollment, open-set identification, deletion that really
removes, export/import, model fingerprints, concurrency and a writer killed mid-transaction."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lafs_edge.errors import UserError
from lafs_edge.gallery import FingerprintMismatch, Gallery, Shot
from testkit import png, unit

pytestmark = pytest.mark.device

MODEL_A, MODEL_B = "a" * 64, "b" * 64


def near(vector: np.ndarray, noise: float, seed: int) -> np.ndarray:
    moved = vector + noise * unit(seed, len(vector))
    return (moved / np.linalg.norm(moved)).astype(np.float32)


def test_file_is_private_and_wal(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as gallery:
        gallery.enroll("ann", [Shot(unit(1))], MODEL_A)
        assert (os.stat(path).st_mode & 0o777) == 0o600
        wal = Path(f"{path}-wal")
        assert wal.exists() and (os.stat(wal).st_mode & 0o777) == 0o600
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_enroll_identify_open_set(tmp_path):
    people = {name: unit(i) for i, name in enumerate(["ann", "bob", "cyd"])}
    with Gallery(tmp_path / "g.db") as gallery:
        for i, (name, vector) in enumerate(people.items()):
            result = gallery.enroll(name, [Shot(vector, "a.jpg"), Shot(near(vector, 0.6, 10 + i), "b.jpg")],
                                    MODEL_A, "model-a")
            assert result.added == ["a.jpg", "b.jpg"]
        queries = np.stack([near(people["bob"], 0.5, 99), near(people["cyd"], 0.5, 98), unit(1234)])
        matches = gallery.identify(queries, MODEL_A, threshold=0.5)
        assert [m.name for m in matches] == ["bob", "cyd", None]
        assert matches[2].best in people and matches[2].score < 0.5 and not matches[2].known
        assert [(p.name, p.shots) for p in gallery.people()] == [("ann", 2), ("bob", 2), ("cyd", 2)]


def test_near_duplicates_skipped_and_nothing_written_when_all_are(tmp_path):
    vector = unit(5)
    with Gallery(tmp_path / "g.db") as gallery:
        result = gallery.enroll("ann", [Shot(vector, "1"), Shot(near(vector, 0.01, 1), "2")], MODEL_A)
        assert result.added == ["1"] and result.skipped[0][0] == "2"
        with pytest.raises(UserError, match="nothing enrolled"):
            gallery.enroll("ann", [Shot(vector, "again")], MODEL_A)
        with pytest.raises(UserError, match="nothing enrolled"):
            gallery.enroll("new person", [Shot(vector, "x")], MODEL_A, duplicate_cosine=-2)
        assert [p.name for p in gallery.people()] == ["ann"]   # the rollback removed "new person"
        with pytest.raises(ValueError, match="L2-normalised"):
            gallery.enroll("bob", [Shot(vector * 3)], MODEL_A)
        with pytest.raises(UserError, match="invalid person name"):
            gallery.enroll("  ", [Shot(unit(7))], MODEL_A)


def test_other_model_is_refused(tmp_path):
    with Gallery(tmp_path / "g.db") as gallery:
        gallery.enroll("ann", [Shot(unit(1))], MODEL_A, "model-a")
        with pytest.raises(FingerprintMismatch, match="model-a"):
            gallery.identify(unit(1)[None], MODEL_B, 0.5, "model-b")
        with pytest.raises(FingerprintMismatch):
            gallery.enroll("bob", [Shot(unit(2))], MODEL_B)
        assert [p.name for p in gallery.people()] == ["ann"]
    with pytest.raises(UserError, match="empty"):
        Gallery(tmp_path / "empty.db").identify(unit(1)[None], MODEL_A, 0.5)


def test_delete_removes_every_byte(tmp_path):
    path = tmp_path / "g.db"
    secret = unit(42)
    crop = b"\x89PNG-crop-of-zoe" + bytes(range(256)) * 20
    with Gallery(path) as gallery:
        gallery.enroll("zoe-the-secret", [Shot(secret, "z.jpg", crop)], MODEL_A)
        gallery.enroll("ann", [Shot(unit(1))], MODEL_A)
        assert gallery.crops("zoe-the-secret") == [crop]
        assert gallery.delete("zoe-the-secret") == 1
        with pytest.raises(UserError, match="no person"):
            gallery.delete("zoe-the-secret")
        assert [p.name for p in gallery.people()] == ["ann"]
        # checked while the gallery is open: the -wal file would still hold the old pages
        # without the VACUUM + WAL truncation (closing the last connection also checkpoints)
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("g.db"))
    assert secret.tobytes() not in raw and crop[:64] not in raw and b"zoe-the-secret" not in raw


def test_export_import_round_trip_and_refusal(tmp_path):
    with Gallery(tmp_path / "a.db") as gallery:
        gallery.enroll("ann", [Shot(unit(1), "1", png(1)), Shot(unit(2), "2")], MODEL_A, "m")
        gallery.enroll("bob", [Shot(unit(3), "3")], MODEL_A, "m")
        assert gallery.export(tmp_path / "out.json") == 3
    assert (os.stat(tmp_path / "out.json").st_mode & 0o777) == 0o600
    with Gallery(tmp_path / "b.db") as copy:
        assert copy.import_(tmp_path / "out.json", MODEL_A) == 3
        assert copy.import_(tmp_path / "out.json") == 0        # idempotent
        vectors, names = copy.embeddings()
        assert names == ["ann", "ann", "bob"] and np.array_equal(vectors[2], unit(3))
        assert copy.crops("ann") == [png(1)] and copy.fingerprint == MODEL_A
        with pytest.raises(FingerprintMismatch):
            copy.import_(tmp_path / "out.json", MODEL_B)
    with Gallery(tmp_path / "c.db") as other:
        other.enroll("cyd", [Shot(unit(4))], MODEL_B)
        with pytest.raises(FingerprintMismatch):
            other.import_(tmp_path / "out.json")
        assert [p.name for p in other.people()] == ["cyd"]
    (tmp_path / "junk.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(UserError, match="not a lafs-edge gallery export"):
        Gallery(tmp_path / "d.db").import_(tmp_path / "junk.json")


def test_not_a_gallery(tmp_path):
    (tmp_path / "x.db").write_bytes(os.urandom(4096))
    with pytest.raises(UserError, match="not a lafs-edge gallery"):
        Gallery(tmp_path / "x.db")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(UserError, match="not a lafs-edge gallery"):
        Gallery(tmp_path / "other.db")
    with pytest.raises(UserError, match="no gallery"):
        Gallery(tmp_path / "missing.db", create=False)


WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from lafs_edge.gallery import Gallery, Shot

    path, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def unit(seed):
        v = np.random.default_rng(seed).standard_normal(64).astype(np.float32)
        return v / np.linalg.norm(v)
    def shots():
        for i in range(count):
            if i == 100 and mode == "slow":
                print("inside", flush=True)   # the transaction is open and has 100 rows
                time.sleep(60)
            yield Shot(unit(1000 + i), f"shot{i}", b"x" * 2000)
    with Gallery(path) as gallery:
        if mode == "people":
            for i in range(count):
                gallery.enroll(f"p{i}", [Shot(unit(i))], "a" * 64)
        else:
            gallery.enroll("big", shots(), "a" * 64)
    print("done", flush=True)
""")


def _writer(tmp_path, path, mode, count):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen([sys.executable, str(script), str(path), mode, str(count)],
                            stdout=subprocess.PIPE, text=True)


def test_writer_killed_mid_transaction_leaves_a_consistent_gallery(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as gallery:
        gallery.enroll("ann", [Shot(unit(1))], MODEL_A)
    writer = _writer(tmp_path, path, "slow", 5000)
    assert writer.stdout.readline().strip() == "inside"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    with Gallery(path) as gallery:
        assert gallery.integrity_check() == "ok"
        assert [(p.name, p.shots) for p in gallery.people()] == [("ann", 1)]
        gallery.enroll("bob", [Shot(unit(2))], MODEL_A)     # still writable
        assert len(gallery.people()) == 2


def test_concurrent_readers_and_one_writer(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as gallery:
        gallery.enroll("seed", [Shot(unit(0))], MODEL_A)
    writer = _writer(tmp_path, path, "people", 150)
    seen, errors = set(), []
    deadline = time.time() + 600   # generous: a loaded machine starts Python slowly
    with Gallery(path, timeout=10) as reader:
        while writer.poll() is None and time.time() < deadline:
            try:
                matches = reader.identify(np.stack([unit(0), unit(7)]), MODEL_A, 0.9)
                assert matches[0].name in ("seed", "p0")
                seen.add(len(reader.people()))
            except Exception as e:  # noqa: BLE001 - any failure of a reader is the bug
                errors.append(repr(e))
    assert writer.wait(timeout=600) == 0 and not errors
    assert len(seen) > 1   # the reader saw the gallery grow while the writer ran
    with Gallery(path) as gallery:
        assert len(gallery.people()) == 151 and gallery.integrity_check() == "ok"


def test_matching_and_transfer_are_rooms_of_their_own(tmp_path):
    """store.py is the store; matching (gallery/matching.py) and export/merge
    (gallery/transfer.py) are called on a Gallery and give what its methods give."""
    from lafs_edge.gallery import matching, store, transfer
    with Gallery(tmp_path / "a.db") as gallery:
        gallery.enroll("ann", [Shot(unit(1), "1"), Shot(unit(2), "2")], MODEL_A, "m")
        gallery.enroll("bob", [Shot(unit(3), "3")], MODEL_A, "m")
        queries = np.stack([near(unit(3), 0.3, 5), unit(99)])
        found = matching.identify(gallery, queries, MODEL_A, 0.5)
        assert found == gallery.identify(queries, MODEL_A, 0.5) and found[0].name == "bob"
        people, per_person = matching.scores(queries, *gallery.embeddings())
        assert people == ["ann", "bob"] and per_person.shape == (2, 2)
        assert matching.person_match(gallery, "ann", unit(2)[None]) == pytest.approx(1.0, abs=1e-5)
        assert transfer.export_gallery(gallery, tmp_path / "out.json") == 3
    with Gallery(tmp_path / "b.db") as copy:
        export = transfer.read_export(tmp_path / "out.json")
        assert transfer.merge_export(copy, export, MODEL_A) == 3
        assert copy.embeddings()[1] == ["ann", "ann", "bob"]
    assert not {"person_match", "export_gallery", "merge_export"} & set(vars(store))
    assert not hasattr(store.Gallery, "_merge_person")
