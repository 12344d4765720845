"""k-shot identification: enroll k images per known identity, identify the rest.

Closed set: rank-1 / rank-5 identification rate of probes of enrolled identities against one
template per identity (mean of its k L2-normalised embeddings, re-normalised).
Open set: some identities are held out entirely; their images are "unknown" probes. At a FAR,
the threshold is set so that at most that fraction of unknown probes score at or above it
against their best gallery match; the detection-and-identification rate (DIR) is the fraction of
known probes whose best match is the right identity AND scores at or above that threshold.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lafs_edge.errors import UserError


def kshot_split(labels, k: int, unknown_fraction: float = 0.0, seed: int = 0) -> dict:
    """Index arrays: enroll (k per known identity), probe (rest of known), unknown (held-out
    identities). Identities with fewer than k+1 images cannot be known (no probe) and go unknown."""
    labels = np.asarray(labels)
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    if not 0 <= unknown_fraction < 1:
        raise UserError(f"unknown fraction must be in [0, 1), got {unknown_fraction}")
    rng = np.random.default_rng(seed)
    identities = np.unique(labels)
    held_out = set(rng.permutation(identities)[:round(unknown_fraction * identities.size)].tolist())
    enroll, probe, unknown = [], [], []
    for identity in identities:
        members = np.nonzero(labels == identity)[0]
        if identity in held_out or members.size <= k:
            unknown.extend(members.tolist())
            continue
        members = rng.permutation(members)
        enroll.extend(members[:k].tolist())
        probe.extend(members[k:].tolist())
    if not enroll:
        raise UserError(f"no identity has more than k={k} images to enroll and probe")
    return {"enroll": np.array(sorted(enroll)), "probe": np.array(sorted(probe)),
            "unknown": np.array(sorted(unknown), dtype=int)}


def gallery_templates(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(templates (C, D) L2-normalised, identity of each row)."""
    identities = np.unique(labels)
    templates = np.stack([embeddings[labels == identity].mean(0) for identity in identities])
    return templates / np.linalg.norm(templates, axis=1, keepdims=True), identities


def identification_report(embeddings: np.ndarray, labels, split: dict, fars=(1e-2, 1e-1),
                          ranks=(1, 5)) -> dict:
    """Rank-r identification rates of known probes; open-set DIR at each FAR when there are
    unknown probes. `embeddings` rows are L2-normalised."""
    labels = np.asarray(labels)
    templates, identities = gallery_templates(embeddings[split["enroll"]], labels[split["enroll"]])
    report: dict[str, Any] = {"gallery_identities": int(identities.size), "enrolled": int(split["enroll"].size),
              "probes": int(split["probe"].size), "unknown_probes": int(split["unknown"].size)}
    if split["probe"].size:
        scores = embeddings[split["probe"]] @ templates.T
        truth = np.searchsorted(identities, labels[split["probe"]])
        true_score = scores[np.arange(truth.size), truth]
        # Rank of the true identity = 1 + number of identities scoring strictly higher.
        rank = 1 + (scores > true_score[:, None]).sum(1)
        for r in ranks:
            report[f"rank{r}"] = float(np.mean(rank <= r))
        if split["unknown"].size:
            impostor_best = (embeddings[split["unknown"]] @ templates.T).max(1)
            report["dir_at_far"] = {}
            for far in fars:
                threshold = open_set_threshold(impostor_best, far)
                hits = (rank == 1) & (true_score >= threshold)
                report["dir_at_far"][f"{far:g}"] = {
                    "dir": float(hits.mean()), "threshold": float(threshold),
                    "resolvable": bool(impostor_best.size * far >= 1)}
    return report


def open_set_threshold(impostor_best: np.ndarray, far: float) -> float:
    """Smallest threshold with (# unknown probes scoring >= it) / N <= far."""
    ordered = np.sort(np.asarray(impostor_best, dtype=np.float64))[::-1]
    allowed = int(np.floor(far * ordered.size + 1e-9))  # false alarms permitted
    if allowed >= ordered.size:
        return -np.inf
    # Just above the (allowed+1)-th highest impostor score: it and everything below are rejected.
    return float(np.nextafter(ordered[allowed], np.inf))
