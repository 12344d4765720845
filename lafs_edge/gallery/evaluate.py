"""Few-shot identification through a real gallery: enroll k photos per person, identify the rest.

`few_shot_identification(embeddings, labels, k, ...)` enrolls k random photos of each of the
enrolled people into a fresh SQLite gallery, keeps some people out as strangers (open set), and
identifies every other photo through `Gallery.identify`. Used by the tests, the docs' figures
(benchmarks/device_identification.py) and the on-device adaptation comparison.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lafs_edge.gallery.store import Gallery, Shot


@dataclass
class IdentificationResult:
    k: int
    enrolled_people: int
    queries: int              # photos of enrolled people not used for enrollment
    rank1: float              # best-matching person is right (closed set, no threshold)
    open_set_accuracy: float  # named, right, and above the threshold
    false_reject: float       # photos of enrolled people called unknown
    stranger_queries: int
    false_accept: float       # photos of never-enrolled people given a name


def few_shot_identification(embeddings: np.ndarray, labels: np.ndarray, k: int, threshold: float,
                            fingerprint: str = "evaluation", stranger_fraction: float = 0.0,
                            seed: int = 0, crops: list[bytes] | None = None,
                            adapt=None) -> IdentificationResult:
    """`crops` (PNG bytes per row) are stored with the shots; `adapt(gallery)`, when given, runs
    after enrollment (on-device adaptation) and identification then uses what it stored."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    people = rng.permutation(np.unique(labels))
    strangers = set(people[:int(round(len(people) * stranger_fraction))].tolist())
    enrolled_rows, query_rows = [], []
    with tempfile.TemporaryDirectory() as folder:
        with Gallery(Path(folder) / "gallery.db") as gallery:
            for person in sorted(set(people.tolist()) - strangers):
                rows = rng.permutation(np.flatnonzero(labels == person))
                enrolled_rows += list(rows[:k])
                query_rows += list(rows[k:])
                shots = [Shot(embeddings[r], f"row {r}", crops[r] if crops else None)
                         for r in rows[:k]]
                gallery.enroll(str(person), shots, fingerprint, duplicate_cosine=1.01)
            if adapt is not None:
                adapt(gallery)
            stranger_rows = np.flatnonzero(np.isin(labels, list(strangers)))
            matches = gallery.identify(embeddings[query_rows], fingerprint, threshold)
            stranger_matches = (gallery.identify(embeddings[stranger_rows], fingerprint, threshold)
                                if len(stranger_rows) else [])
    truth = [str(labels[r]) for r in query_rows]
    return IdentificationResult(
        k=k, enrolled_people=len(people) - len(strangers), queries=len(query_rows),
        rank1=float(np.mean([m.best == t for m, t in zip(matches, truth)])),
        open_set_accuracy=float(np.mean([m.name == t for m, t in zip(matches, truth)])),
        false_reject=float(np.mean([not m.known for m in matches])),
        stranger_queries=len(stranger_rows),
        false_accept=float(np.mean([m.known for m in stranger_matches])) if stranger_matches else 0.0)
