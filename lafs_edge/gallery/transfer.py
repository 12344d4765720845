"""Moving a gallery's people between galleries (`lafs-edge gallery export/import`): writing the
export file, reading it as untrusted input, and merging it under enrolment's rules.

An export can come from anywhere (one person per record, names compared as the gallery
compares them), and one crafted vector decides who matches whom (scaled x100 it
outscores every real shot; NaN makes every face unknown; a short one breaks every later
identify). So `read_export` checks every record - types, names, vector length against the
model's dimension, finite values, unit length, crops that are PNG - and refuses the whole file,
naming the first bad record, before the gallery is touched.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.fileio import write_bytes_atomic
from lafs_edge.gallery.adapt import drop_adapters
from lafs_edge.gallery.files import check_export_target, remove_stale_temporaries
from lafs_edge.gallery.names import check_name, name_key
from lafs_edge.gallery.rules import (FingerprintMismatch, PeopleIndex, check_imported_shots,
                                     stored_vectors)

if TYPE_CHECKING:
    from lafs_edge.gallery.store import Gallery

EXPORT_FORMAT = "lafs-edge-gallery-export/1"
UNIT_TOLERANCE = 1e-3      # the same tolerance enroll applies to new embeddings
MAX_TEXT = 1000            # fingerprint, model name, source: generous, but bounded


@dataclass
class ImportedShot:
    vector: np.ndarray                 # float32, unit length
    quality: dict = field(default_factory=dict)
    crop_png: bytes | None = None
    source: str | None = None
    created: float | None = None


@dataclass
class ImportedPerson:
    name: str
    shots: list[ImportedShot]


@dataclass
class ExportFile:
    fingerprint: str
    model: str
    dim: int
    people: list[ImportedPerson]

    @property
    def shots(self) -> int:
        return sum(len(person.shots) for person in self.people)


class BadRecord(ValueError):
    """One field of the export is wrong (the message says which and why)."""


def write_export(path: Path, fingerprint: str, model: str | None, people: list[dict]) -> None:
    """The document, 0600 and atomic; temporaries a killed earlier export left are removed."""
    remove_stale_temporaries(path)
    document = {"format": EXPORT_FORMAT, "fingerprint": fingerprint, "model": model,
                "people": people}
    write_bytes_atomic(path, json.dumps(document).encode(), private=True)


def shot_record(vector: bytes, dim: int, quality: str | None, crop: bytes | None,
                source: str | None, created: float) -> dict:
    return {"vector": _b64(vector), "dim": dim, "quality": json.loads(quality or "{}"),
            "crop_png": _b64(crop) if crop else None, "source": source, "created": created}


def read_export(path: str | os.PathLike, dim: int | None = None) -> ExportFile:
    """Parse and check an export; `dim` is the embedding size it must have (the gallery's or
    the model's) when known. Raises UserError naming the first bad record."""
    path = Path(path)
    document = _load_json(path)
    try:
        return _check_document(document, dim)
    except BadRecord as e:
        raise UserError(f"{path}: {e}; nothing imported") from None


def export_gallery(gallery: Gallery, path: Path, force: bool = False) -> int:
    """Everything (people, vectors, crops, the model fingerprint) to one JSON file, 0600 and
    atomic; an existing file only with `force`, never an SQLite one. Returns the shots written."""
    check_export_target(path, gallery.path, force)
    if gallery.fingerprint is None:
        raise UserError(f"gallery {gallery.path} is empty: nothing to export")
    people: list[dict[str, Any]] = []
    with gallery.snapshot() as db:   # one consistent view
        for person in gallery.people():
            rows = db.execute(
                "SELECT e.vector, e.dim, e.quality, e.crop_png, e.source, e.created "
                "FROM embeddings e JOIN people p ON p.id = e.person_id WHERE p.name = ? "
                "ORDER BY e.id", (person.name,))
            people.append({"name": person.name, "created": person.created,
                           "shots": [shot_record(*row) for row in rows]})
    write_export(path, gallery.fingerprint, gallery.model_name, people)
    return sum(len(p["shots"]) for p in people)


def merge_export(gallery: Gallery, export: ExportFile, fingerprint: str | None = None,
                 source: str = "the export", threshold: float | None = None) -> int:
    """Merge a checked export in one transaction, under enrolment's rules. Refused when its
    model differs from the gallery's (or from `fingerprint`, the model in use) or its vectors
    have another size, and when a shot under an enrolled name does not match that person at
    `threshold` (default: the gallery's recorded one; none known: adding to an enrolled person
    is refused). Shots already present (same vector) are not added twice. Returns the added."""
    if fingerprint is not None and export.fingerprint != fingerprint:
        raise FingerprintMismatch(
            f"{source} was exported from model {export.model or '?'} (fingerprint "
            f"{export.fingerprint[:12]}), not the model in use ({fingerprint[:12]})")
    added = 0
    with gallery.transaction() as db:
        gallery.bind(db, export.fingerprint, export.model, export.dim, threshold)
        threshold = threshold if threshold is not None else gallery.threshold
        drop_adapters(db)
        index = PeopleIndex(db)
        for person in export.people:
            added += _merge_person(gallery, db, index, person, export.fingerprint, threshold,
                                   source)
    return added


def _merge_person(gallery: Gallery, db: sqlite3.Connection, index: PeopleIndex,
                  person: ImportedPerson, fingerprint: str, threshold: float | None,
                  source: str) -> int:
    person_id, name = gallery.person_id(db, person.name, index)
    stored = stored_vectors(db, person_id)
    existing = {vector.tobytes() for vector in stored}
    new = [shot for shot in person.shots if shot.vector.tobytes() not in existing]
    check_imported_shots(name, stored, new, threshold, source)
    added = 0
    for shot in new:
        vector = shot.vector.tobytes()
        if vector in existing:
            continue
        db.execute("INSERT INTO embeddings (person_id, fingerprint, dim, vector, quality, "
                   "crop_png, source, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (person_id, fingerprint, len(shot.vector), vector, json.dumps(shot.quality),
                    shot.crop_png, shot.source, shot.created or time.time()))
        existing.add(vector)
        added += 1
    return added


def _load_json(path: Path):
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a gallery export")
    if not path.is_file():
        raise UserError(f"gallery export not found: {path}")
    try:
        document = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise UserError(f"{path} is not a lafs-edge gallery export (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise UserError(f"{path} is not a lafs-edge gallery export (format {found!r}, "
                        f"want {EXPORT_FORMAT!r})")
    return document


def _check_document(document: dict, dim: int | None) -> ExportFile:
    fingerprint = _text(document.get("fingerprint"), "fingerprint", required=True)
    model = _text(document.get("model"), "model") or ""
    people_records = document.get("people")
    if not isinstance(people_records, list) or not people_records:
        raise BadRecord("'people' must be a non-empty list")
    people: list[ImportedPerson] = []
    first_of: dict[str, int] = {}   # name_key -> index: one record per person
    for index, record in enumerate(people_records):
        person, dim = _check_person(record, f"people[{index}]", dim)
        key = name_key(person.name)
        if key in first_of:
            raise BadRecord(f"people[{index}] ({person.name!r}) is people[{first_of[key]}] "
                            f"({people[first_of[key]].name!r}) again: one record per person")
        first_of[key] = index
        people.append(person)
    assert dim is not None   # every person has shots
    return ExportFile(fingerprint, model, dim, people)


def _check_person(record, where: str, dim: int | None) -> tuple[ImportedPerson, int | None]:
    if not isinstance(record, dict):
        raise BadRecord(f"{where} must be an object")
    try:
        name = check_name(_text(record.get("name"), f"{where}.name", required=True))
    except UserError as e:
        raise BadRecord(f"{where}: {e}") from None
    where = f"{where} ({name!r})"
    shot_records = record.get("shots")
    if not isinstance(shot_records, list) or not shot_records:
        raise BadRecord(f"{where}: 'shots' must be a non-empty list")
    shots = []
    for number, shot in enumerate(shot_records, 1):
        checked = _check_shot(shot, f"{where} shot {number}", dim)
        dim = len(checked.vector)
        shots.append(checked)
    return ImportedPerson(name, shots), dim


def _check_shot(record, where: str, dim: int | None) -> ImportedShot:
    if not isinstance(record, dict):
        raise BadRecord(f"{where} must be an object")
    vector = _check_vector(record, where, dim)
    quality = record.get("quality")
    if quality is not None and not isinstance(quality, dict):
        raise BadRecord(f"{where}: 'quality' must be an object")
    crop = record.get("crop_png")
    return ImportedShot(vector, quality or {},
                        _check_png(crop, where) if crop is not None else None,
                        _text(record.get("source"), f"{where}.source"),
                        _number(record.get("created"), f"{where}.created"))


def _check_vector(record: dict, where: str, dim: int | None) -> np.ndarray:
    stated = record.get("dim")
    if not isinstance(stated, int) or isinstance(stated, bool) or stated < 1:
        raise BadRecord(f"{where}: 'dim' must be a positive integer, got {stated!r}")
    if dim is not None and stated != dim:
        raise BadRecord(f"{where}: {stated}-d vector, the gallery/model uses {dim}-d")
    raw = _base64(record.get("vector"), f"{where}.vector")
    if len(raw) != 4 * stated:
        raise BadRecord(f"{where}: vector has {len(raw)} bytes, 'dim' {stated} needs {4 * stated}")
    vector = np.frombuffer(raw, dtype=np.float32).copy()
    if not np.all(np.isfinite(vector)):
        raise BadRecord(f"{where}: vector holds NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1.0) > UNIT_TOLERANCE:
        raise BadRecord(f"{where}: vector is not unit length (norm {norm:.4g})")
    return vector


def _check_png(value, where: str) -> bytes:
    """PNG bytes whose chunks all check out (Pillow verifies without printing libpng noise)."""
    from PIL import Image

    data = _base64(value, f"{where}.crop_png")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.verify()
    except Exception:  # noqa: BLE001 - Pillow raises many types for a bad image
        raise BadRecord(f"{where}: crop_png is not a valid PNG image") from None
    return data


def _base64(value, where: str) -> bytes:
    if not isinstance(value, str):
        raise BadRecord(f"{where} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRecord(f"{where} is not valid base64") from None


@overload
def _text(value, where: str, required: Literal[True]) -> str: ...
@overload
def _text(value, where: str, required: bool = False) -> str | None: ...
def _text(value, where: str, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise BadRecord(f"{where} must be a string of 1-{MAX_TEXT} characters, got "
                        f"{_short(value)}")
    return value


def _number(value, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRecord(f"{where} must be a finite number, got {_short(value)}")
    return float(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
