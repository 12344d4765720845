"""Enrolment's rules, applied to every shot that enters a gallery, whether `enroll` (the CLI or
the demo) computed it or `gallery import` read it from a file:

- a name is found by its key (names.name_key: "barack obama" is "Barack Obama"), and a new name
  that only looks like an enrolled one ("аlice" in Cyrillic beside "alice") is warned about;
- shots added under an enrolled name must match that person's stored shots at the model's
  threshold, or a different face merges silently into someone else;
- every vector has the size the gallery is bound to.

The store calls these inside its write transaction, so two processes enrolling different
people under one new name at the same time cannot both pass the check.
"""
from __future__ import annotations

import logging
import sqlite3

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.gallery.names import name_key, skeleton

logger = logging.getLogger(__name__)


class NotThePerson(UserError):
    """New shots under an enrolled name do not match that person's stored shots."""


class PeopleIndex:
    """Every enrolled name by its key and by its skeleton, read once per transaction: an import
    of thousands of people looks each one up."""

    def __init__(self, db: sqlite3.Connection):
        self.by_key: dict[str, tuple[int, str]] = {}
        self.by_shape: dict[str, str] = {}
        for person_id, stored in db.execute("SELECT id, name FROM people ORDER BY id"):
            self.add(person_id, stored)

    def add(self, person_id: int, name: str) -> None:
        self.by_key.setdefault(name_key(name), (person_id, name))
        self.by_shape.setdefault(skeleton(name), name)

    def find(self, name: str) -> tuple[int, str] | None:
        """(id, stored display name) of the person `name` designates, or None."""
        return self.by_key.get(name_key(name))

    def warn_if_look_alike(self, name: str) -> None:
        """A new person whose name is drawn like an enrolled one is allowed (two people may
        really be "Ivan" and "Іvan"), but said, since it is how one is passed off as the other."""
        stored = self.by_shape.get(skeleton(name))
        if stored is not None and name_key(stored) != name_key(name):
            logger.warning("warning: %r looks like the enrolled %r but is a different name "
                           "(different letters drawn alike); enrolled as a new person", name,
                           stored)


def find_person(db: sqlite3.Connection, name: str) -> tuple[int, str] | None:
    """(id, stored display name) of the person `name` designates, or None."""
    return PeopleIndex(db).find(name)


def stored_vectors(db: sqlite3.Connection, person_id: int) -> np.ndarray:
    rows = db.execute("SELECT vector, dim FROM embeddings WHERE person_id = ? ORDER BY id",
                      (person_id,)).fetchall()
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.stack([np.frombuffer(blob, np.float32, count=dim) for blob, dim in rows])


def match_score(stored: np.ndarray, new: np.ndarray) -> float | None:
    """Best cosine between new (unit) vectors and a person's stored ones; None when nothing is
    stored."""
    if not len(stored):
        return None
    new = np.atleast_2d(np.asarray(new, np.float32))
    if new.shape[1] != stored.shape[1]:
        raise DimensionMismatch(f"new embeddings have {new.shape[1]} values, the person's "
                                f"stored ones {stored.shape[1]}")
    new = new / np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
    return float((new @ stored.T).max())


ENROLL_REMEDY = "Use another name, or --allow-mismatch to add them anyway"


def check_same_person(name: str, score: float | None, threshold: float | None,
                      allow_mismatch: bool, what: str = "these photos",
                      remedy: str = ENROLL_REMEDY) -> float | None:
    """None when `what` may be added under `name`; the score when it does not match but
    `allow_mismatch` lets it in (the caller warns); raises NotThePerson otherwise."""
    if score is None or threshold is None or score >= threshold:
        return None
    if allow_mismatch:
        return score
    raise NotThePerson(f"{name!r} is already enrolled and {what} do not match their shots "
                       f"(best cosine {score:.3f}, threshold {threshold:.3f}): a different "
                       f"person? {remedy}")


class FingerprintMismatch(UserError):
    """Embeddings of one model compared with (or added to) a gallery of another."""


class DimensionMismatch(UserError):
    """Vectors of another size than the gallery's (another model's, whatever they claim)."""


def check_dimension(bound: int | None, dim: int, what: str, holder: str = "the gallery holds") -> None:
    if bound is not None and bound != dim:
        raise DimensionMismatch(f"{what}: {dim}-d embeddings, {holder} {bound}-d ones "
                                "(another model's vectors, whatever fingerprint they carry)")


def check_imported_shots(name: str, stored: np.ndarray, new: list, threshold: float | None,
                          source: str) -> None:
    """Each imported shot added to an enrolled person must match that person on its own (a
    renamed export of someone else otherwise merges into them, and one copied vector among
    the shots would pass a best-of check)."""
    if not len(stored) or not new:
        return
    what = f"the shots of {name!r} in {source}"
    if threshold is None:
        raise UserError(f"{name!r} is already enrolled and no threshold is known to check that "
                        f"{what} are the same person: pass --model (the gallery's model)")
    for shot in new:
        check_same_person(name, match_score(stored, shot.vector), threshold, False, what,
                          "Rename the person in the export, or delete them from the gallery "
                          "first")
