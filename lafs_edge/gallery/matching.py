"""Matching new faces against a gallery: who each query embedding is (`identify`), and how well
new shots fit a person already enrolled (`person_match`).

Scores are cosines of L2-normalised vectors; a person's score is the best over their shots. The
store (store.py) keeps the vectors and caches them between calls; this module only reads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lafs_edge.errors import UserError
from lafs_edge.gallery.adapt import choose_people
from lafs_edge.gallery.rules import DimensionMismatch, FingerprintMismatch, match_score

if TYPE_CHECKING:
    from lafs_edge.gallery.store import Gallery


@dataclass
class Match:
    name: str | None     # None: below the threshold (unknown)
    score: float         # cosine with the best-matching person
    best: str | None     # the best-matching person even when unknown

    @property
    def known(self) -> bool:
        return self.name is not None


def identify(gallery: Gallery, queries: np.ndarray, fingerprint: str, threshold: float,
             model_name: str = "", adapted: bool = True) -> list[Match]:
    """Best person per query row (cosine, max over each person's shots); below `threshold`
    the face is unknown. `queries` must be L2-normalised and from the bound model. With an
    adapter (and `adapted`), the adapter ranks the people and the threshold still applies to
    the cosine with the chosen person's shots (gallery/adapt.py)."""
    if gallery.fingerprint is None:
        raise UserError(f"gallery {gallery.path} is empty: enroll someone first")
    gallery.check_model(fingerprint, model_name)
    matrix, names = gallery.cached_embeddings()
    if not names:
        raise UserError(f"gallery {gallery.path} has no one enrolled: enroll someone first")
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    if matrix.shape[1] != queries.shape[1]:
        raise FingerprintMismatch(f"query embeddings have {queries.shape[1]} values, the "
                                  f"gallery's {matrix.shape[1]}")
    people, per_person = scores(queries, matrix, names)
    adapter = gallery.adapter(fingerprint) if adapted else None
    chosen = (choose_people(adapter, queries, people) if adapter is not None
              else per_person.argmax(1))
    matches = []
    for row, best in zip(per_person, chosen):
        best = int(best)
        score = float(row[best])
        matches.append(Match(people[best] if score >= threshold else None, score, people[best]))
    return matches


def scores(queries: np.ndarray, matrix: np.ndarray,
           names: list[str]) -> tuple[list[str], np.ndarray]:
    """(people sorted by name, (Q, P) best cosine of each query with each person's shots), for
    `matrix` the stored vectors and `names` the person of each of its rows."""
    people = sorted(set(names))
    column_of = {name: column for column, name in enumerate(people)}
    owner = np.array([column_of[n] for n in names])
    cosines = queries @ matrix.T
    per_person = np.full((len(queries), len(people)), -np.inf, np.float32)
    for column in range(len(people)):
        per_person[:, column] = cosines[:, owner == column].max(1)
    return people, per_person


def person_match(gallery: Gallery, name: str, embeddings: np.ndarray) -> float | None:
    """Best cosine between the new shots and the person's stored ones; None for a new person.

    Enrolling under an existing name merges into that person, so callers (CLI `enroll`, the
    demo) compare this with the model's threshold to catch a different face under a taken name."""
    stored, _ = gallery.embeddings(name)
    try:
        return match_score(stored, embeddings)
    except DimensionMismatch:
        raise FingerprintMismatch(f"new embeddings have {np.atleast_2d(embeddings).shape[1]} "
                                  f"values, {name!r}'s stored ones {stored.shape[1]}") from None
