"""The gallery: enrolled people and their face embeddings in one SQLite file.

Face embeddings are biometric data, so the file is created 0600 in one step (built in memory,
written under a temporary name, linked into place: no process sees a half-made gallery), deleted
rows are overwritten (secure_delete), and after a delete the file is vacuumed and its WAL
checkpointed and truncated; when another process's open read keeps the old pages alive, the
delete says so (ErasureIncomplete) instead of claiming an erasure that has not happened.

An existing file is first opened read-only and checked to be a gallery before anything is written
to it (another program's SQLite file is never switched to WAL mode); readers (`list`, `identify`,
`export`) stay read-only, so a gallery in a read-only folder can still be used. WAL mode lets
readers run while one writer changes it; writers take the lock up front (BEGIN IMMEDIATE) and
wait up to `timeout` seconds for another writer (GalleryBusy after that). Every change is one
transaction, so a writer killed midway leaves the database as it was before that change.

Every embedding row carries the fingerprint of the model that computed it, and the gallery is bound
to the first model that enrolls into it: vectors of different models live in different spaces and
are never compared (FingerprintMismatch).
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.gallery import matching, transfer
from lafs_edge.gallery.adapt import drop_adapters, load_adapter
from lafs_edge.gallery.files import (check_writable, create_gallery_file, explain, read_only_uri,
                                     remove_stale_temporaries, sqlite_errors)
from lafs_edge.gallery.matching import Match
from lafs_edge.gallery.names import check_name
from lafs_edge.gallery.rules import (FingerprintMismatch, PeopleIndex, check_dimension,
                                     check_same_person, find_person, match_score, stored_vectors)
from lafs_edge.gallery.schema import check_schema
from lafs_edge.gallery.transfer import ExportFile

__all__ = ["DUPLICATE_COSINE", "EnrollResult", "ErasureIncomplete", "FORMAT", "FingerprintMismatch",
           "Gallery", "Match", "Person", "Shot", "check_name"]

FORMAT = "lafs-edge-gallery/1"
DUPLICATE_COSINE = 0.97   # a new shot this close to one of the person's shots adds nothing

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    quality TEXT, crop_png BLOB, source TEXT, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS embeddings_person ON embeddings(person_id);
"""


class ErasureIncomplete(UserError):
    """The person is gone from the gallery, but another process's open read still keeps the
    old pages (their vectors and crops) in the file."""


@dataclass
class Shot:
    """One enrollment image's result: its L2-normalised embedding and what to keep with it."""
    embedding: np.ndarray
    source: str | None = None
    crop_png: bytes | None = None
    quality: dict = field(default_factory=dict)


@dataclass
class EnrollResult:
    name: str                            # as stored: the spelling the person was first enrolled by
    added: list[str]                     # sources of the stored shots
    skipped: list[tuple[str, str]]       # (source, reason)
    mismatch: float | None = None        # best cosine when --allow-mismatch let unmatched shots in


@dataclass
class Person:
    name: str
    shots: int
    created: float


class Gallery:
    """`Gallery(path)` opens for changes (creating the file when missing); `Gallery(path,
    readonly=True)` only reads and never creates or modifies anything."""

    def __init__(self, path: str | os.PathLike, create: bool = True, timeout: float = 30.0,
                 readonly: bool = False):
        self.path, self.timeout, self.readonly = Path(path), timeout, readonly
        if not self.path.exists():
            if readonly or not create:
                raise UserError(f"no gallery at {self.path} (enroll someone first)")
            create_gallery_file(self.path, SCHEMA, FORMAT)
        elif not self.path.is_file():
            raise UserError(f"gallery path is not a file: {self.path}")
        self._connection = self._open()
        self._cache: tuple[tuple, tuple] | None = None
        self._adapter_cache: tuple | None = None

    def _open(self) -> sqlite3.Connection:
        """Read-only until the file is known to be a gallery; then, for writers, read-write."""
        probe = self._connect(read_only_uri(self.path), uri=True)
        try:
            self._check_format(probe)
        except UserError:
            probe.close()
            raise
        except sqlite3.DatabaseError as e:
            probe.close()
            if "locked" in str(e).lower() or "malformed" in str(e).lower():
                raise explain(e, self.path, self.timeout) from None
            raise UserError(f"{self.path} is not a lafs-edge gallery ({e})") from None
        if self.readonly:
            return probe
        probe.close()
        check_writable(self.path)
        remove_stale_temporaries(self.path)   # a creation killed between link and unlink
        db = self._connect(str(self.path))
        with sqlite_errors(self.path, self.timeout):
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")     # a committed enrollment survives power loss
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA secure_delete = ON")     # deleted faces are overwritten, not freed
        return db

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=self.timeout, isolation_level=None, uri=uri)
        db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return db

    def _check_format(self, db: sqlite3.Connection) -> None:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            raise sqlite3.DatabaseError("an empty file or an empty SQLite database")
        if not {"meta", "people", "embeddings"} <= tables:
            raise sqlite3.DatabaseError("an SQLite file without the gallery tables")
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is None or row[0] != FORMAT:
            raise sqlite3.DatabaseError(f"unsupported gallery format {row[0] if row else None!r}")
        check_schema(db, self.path, SCHEMA)   # no planted trigger, no orphan shots

    # --- plumbing --------------------------------------------------------------------------------

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error: all of a change or none of it."""
        if self.readonly:
            raise UserError(f"gallery {self.path} was opened read-only")
        db = self._connection
        with sqlite_errors(self.path, self.timeout):
            db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            with sqlite_errors(self.path, self.timeout):
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent view while writers go on (WAL)."""
        db = self._connection
        with sqlite_errors(self.path, self.timeout):
            db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the model this gallery is bound to (None while empty)."""
        return self._meta("fingerprint")

    @property
    def model_name(self) -> str | None:
        return self._meta("model")

    @property
    def model_source(self) -> str | None:
        """The `--model` value the gallery was enrolled with (a shipped name or an absolute
        path), so readers can open the same model without being told (None: not recorded)."""
        return self._meta("model_source")

    def remember_model_source(self, source: str) -> None:
        """Record `source` as the way to open this gallery's model (the latest one wins)."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('model_source', ?)", (source,))

    def check_model(self, fingerprint: str, model_name: str = "") -> None:
        bound = self.fingerprint
        if bound is not None and bound != fingerprint:
            source = self.model_source
            use = (f"use --model {source} (or leave --model out: the gallery's own model is "
                   "used)" if source else "use the same --model")
            raise FingerprintMismatch(
                f"gallery {self.path} was enrolled with model {self.model_name or '?'} "
                f"(fingerprint {bound[:12]}), not {model_name or 'this model'} "
                f"(fingerprint {fingerprint[:12]}); embeddings of different models cannot be "
                f"compared: {use}, or enroll into a new gallery")

    def bind(self, db: sqlite3.Connection, fingerprint: str, model_name: str, dim: int,
              threshold: float | None = None) -> None:
        """Bind the gallery to a model on its first write: fingerprint, vector size and (when
        known) threshold; later writes must agree with the first two."""
        self.check_model(fingerprint, model_name)
        check_dimension(self.embedding_dim(), dim, f"gallery {self.path}")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
        db.execute("INSERT OR IGNORE INTO meta VALUES ('model', ?)", (model_name,))
        db.execute("INSERT OR IGNORE INTO meta VALUES ('dim', ?)", (str(dim),))
        if threshold is not None:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('threshold', ?)", (repr(threshold),))

    @property
    def threshold(self) -> float | None:
        """The threshold of the model that enrolled into this gallery (None: not recorded)."""
        value = self._meta("threshold")
        return float(value) if value is not None else None

    # --- reading -------------------------------------------------------------------------------

    def people(self) -> list[Person]:
        rows = self._connection.execute(
            "SELECT p.name, COUNT(e.id), p.created FROM people p "
            "LEFT JOIN embeddings e ON e.person_id = p.id GROUP BY p.id ORDER BY p.name")
        return [Person(name, shots, created) for name, shots, created in rows]

    def embeddings(self, name: str | None = None) -> tuple[np.ndarray, list[str]]:
        """(N, D) stored vectors and the person of each row (all people, or one)."""
        query = ("SELECT p.name, e.vector, e.dim FROM embeddings e "
                 "JOIN people p ON p.id = e.person_id")
        rows = (self._connection.execute(query + " WHERE p.id = ? ORDER BY e.id",
                                         (self._id_of(name),))
                if name else self._connection.execute(query + " ORDER BY e.id"))
        names, vectors = [], []
        for person, blob, dim in rows:
            names.append(person)
            vectors.append(np.frombuffer(blob, dtype=np.float32, count=dim))
        matrix = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
        return matrix, names

    def crops(self, name: str) -> list[bytes]:
        """The enrollment crops (PNG bytes) kept for one person."""
        rows = self._connection.execute(
            "SELECT crop_png FROM embeddings WHERE person_id = ? AND crop_png IS NOT NULL "
            "ORDER BY id", (self._id_of(name),))
        return [row[0] for row in rows]

    def _id_of(self, name: str) -> int | None:
        exact = self._connection.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
        if exact is not None:   # a stored name as it is (people(), adapt): no scan
            return exact[0]
        found = find_person(self._connection, name)
        return found[0] if found else None

    def cached_embeddings(self) -> tuple[np.ndarray, list[str]]:
        """`embeddings()` of everyone, re-read only when this or another connection changed the database."""
        version = (self._connection.execute("PRAGMA data_version").fetchone()[0],
                   self._connection.total_changes)
        if self._cache is None or self._cache[0] != version:
            self._cache = (version, self.embeddings())
        return self._cache[1]

    def adapter(self, fingerprint: str):
        """The on-device adapter trained for this model (`lafs-edge adapt`), or None."""
        version = self._connection.execute("PRAGMA data_version").fetchone()[0]
        key = (version, self._connection.total_changes, fingerprint)
        if self._adapter_cache is None or self._adapter_cache[0] != key:
            self._adapter_cache = (key, load_adapter(self._connection, fingerprint))
        return self._adapter_cache[1]

    def identify(self, queries: np.ndarray, fingerprint: str, threshold: float,
                 model_name: str = "", adapted: bool = True) -> list[Match]:
        """Best person per query row, or unknown below `threshold` (matching.identify)."""
        return matching.identify(self, queries, fingerprint, threshold, model_name, adapted)

    # --- writing -------------------------------------------------------------------------------

    def enroll(self, name: str, shots: Iterable[Shot], fingerprint: str, model_name: str = "",
               duplicate_cosine: float = DUPLICATE_COSINE, threshold: float | None = None,
               allow_mismatch: bool = False) -> EnrollResult:
        """Add `shots` of one person (created if new) in one transaction. Shots nearly identical
        to a shot already kept (cosine >= duplicate_cosine) are skipped. With the model's
        `threshold`, shots under an enrolled name must match that person (rules.NotThePerson;
        `allow_mismatch` adds them and reports the score): checked inside the transaction, so a
        concurrent enrollment under the same name is seen. Raises UserError, and changes
        nothing, when no shot is left to add."""
        name = check_name(name)
        checked = _checked_shots(shots)
        with self.transaction() as db:
            if checked:
                self.bind(db, fingerprint, model_name, len(checked[0][2]), threshold)
            person_id, name = self.person_id(db, name)
            result = EnrollResult(name, [], [])
            kept = list(stored_vectors(db, person_id))
            new = np.stack([vector for _, _, vector in checked]) if checked else None
            result.mismatch = check_same_person(
                name, match_score(np.asarray(kept), new) if kept and new is not None else None,
                threshold, allow_mismatch)
            drop_adapters(db)   # trained on the old set of people
            for source, shot, vector in checked:
                similar = max((float(vector @ k) for k in kept), default=-1.0)
                if similar >= duplicate_cosine:
                    result.skipped.append((source, f"near-duplicate of a kept shot "
                                                   f"(cosine {similar:.3f})"))
                    continue
                db.execute("INSERT INTO embeddings (person_id, fingerprint, dim, vector, quality,"
                           " crop_png, source, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (person_id, fingerprint, len(vector), vector.tobytes(),
                            json.dumps(shot.quality), shot.crop_png, source, time.time()))
                kept.append(vector)
                result.added.append(source)
            if not result.added:
                reasons = "; ".join(f"{s}: {r}" for s, r in result.skipped) or "no images"
                raise UserError(f"nothing enrolled for {name!r} ({reasons})")
        return result

    def person_id(self, db: sqlite3.Connection, name: str,
                   index: PeopleIndex | None = None) -> tuple[int, str]:
        """(id, stored name) of the person `name` designates, created when new."""
        index = index or PeopleIndex(db)
        found = index.find(name)
        if found is not None:
            return found
        index.warn_if_look_alike(name)
        cursor = db.execute("INSERT INTO people (name, created) VALUES (?, ?)", (name, time.time()))
        index.add(int(cursor.lastrowid or 0), name)
        return int(cursor.lastrowid or 0), name

    def delete(self, name: str) -> int:
        """Remove a person and every shot, then erase the freed pages from the disk (`erase`).
        Returns the number of shots removed (0 when the person was already removed by a delete
        whose erasure another process blocked: running it again finishes that erasure)."""
        with self.transaction() as db:
            row = find_person(db, name)
            if row is None and self._meta("erasure_pending") is None:
                raise UserError(f"no person named {name!r} in {self.path}")
            count = 0
            if row is not None:
                count = db.execute("DELETE FROM embeddings WHERE person_id = ?",
                                   (row[0],)).rowcount
                drop_adapters(db)   # its prototypes derive from this person's faces
                db.execute("DELETE FROM people WHERE id = ?", (row[0],))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('erasure_pending', '1')")
        self.erase()
        return count

    def erase(self) -> None:
        """VACUUM rewrites the file without the freed pages; the TRUNCATE checkpoint copies that
        into the main file and empties the WAL, which still holds the pages of earlier writes.
        A reader in the middle of a read keeps the old pages alive and makes the checkpoint
        give up after `timeout`: then the erasure is reported as not done."""
        db = self._connection
        try:
            db.execute("VACUUM")
            busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError as e:
            busy = "locked" in str(e).lower() or "busy" in str(e).lower()
            if not busy:   # a full disk, say: the removal is committed, only erasing failed
                raise ErasureIncomplete(
                    f"removed from {self.path}, but erasing the deleted data from the disk "
                    f"failed ({explain(e, self.path, self.timeout).reason}), so the deleted "
                    "vectors and crops are still in the file: fix that (free some space) and "
                    "run the same delete again to finish erasing") from None
        if busy:
            raise ErasureIncomplete(
                f"removed from {self.path}, but another process (identify, the demo, an export) "
                f"kept reading it for more than {self.timeout:g} s, so the deleted vectors and "
                "crops are still in the file: close it and run the same delete again to finish "
                "erasing")
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = 'erasure_pending'")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")   # only that flag's page; best effort

    def compact(self) -> None:
        """Erase freed pages (after dropping an adapter, say); same rules as `erase`."""
        self.erase()

    # --- export / import -----------------------------------------------------------------------

    def export(self, path: str | os.PathLike, force: bool = False) -> int:
        """Everything to one JSON file, 0600 and atomic (transfer.export_gallery); returns the
        number of shots written."""
        return transfer.export_gallery(self, Path(path), force)

    def embedding_dim(self) -> int | None:
        """The size of the gallery's vectors: bound at its first write (galleries of earlier
        versions: that of the stored vectors); None while no one is enrolled."""
        bound = self._meta("dim")
        if bound is not None:
            return int(bound)
        row = self._connection.execute("SELECT dim FROM embeddings LIMIT 1").fetchone()
        return row[0] if row else None

    def import_(self, path: str | os.PathLike, fingerprint: str | None = None) -> int:
        """Check an export (transfer.read_export) and merge it (`merge`)."""
        return self.merge(transfer.read_export(path, self.embedding_dim()), fingerprint, str(path))

    def merge(self, export: ExportFile, fingerprint: str | None = None,
              source: str = "the export", threshold: float | None = None) -> int:
        """Merge a checked export in one transaction, under enrolment's rules
        (transfer.merge_export); returns the shots added."""
        return transfer.merge_export(self, export, fingerprint, source, threshold)

    def integrity_check(self) -> str:
        return self._connection.execute("PRAGMA integrity_check").fetchone()[0]


def _checked_shots(shots: Iterable[Shot]) -> list[tuple[str, Shot, np.ndarray]]:
    """(source, shot, unit vector) for each shot, all of one size."""
    checked: list[tuple[str, Shot, np.ndarray]] = []
    for number, shot in enumerate(shots):
        source = shot.source or f"shot {number + 1}"
        vector = _unit_vector(shot.embedding, source)
        check_dimension(len(checked[0][2]) if checked else None, len(vector), source,
                        "the first shot has")
        checked.append((source, shot, vector))
    return checked


def _unit_vector(embedding: np.ndarray, source: str) -> np.ndarray:
    vector = np.asarray(embedding, np.float32).ravel()
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or abs(norm - 1.0) > 1e-3:
        raise ValueError(f"{source}: embeddings must be L2-normalised (norm {norm:.4f})")
    return vector
