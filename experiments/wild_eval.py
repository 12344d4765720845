"""The campaign's yardstick: TAR at FAR 1e-3 on the CelebA eval identities (in the wild, never in
the pool) over ALL pairs, with its spread, and an illumination stress set made from them.

- All pairs: 1,058 faces of 44 identities give 13,271 genuine and 545,882 impostor pairs; the
  threshold is the score that 0.1% of impostors exceed (about 546 of them, not 13).
- Spread: a bootstrap over identities (identities drawn with replacement; a pair's weight is the
  product of its identities' draw counts), 200 draws (50 per stress condition): the std of TAR
  and its 2.5-97.5% range.
- Stress set (`RELIGHT`): every eval crop relit in linear light (a physical model independent of
  the training augmentation in train/distill_views.py): light from one side, a hard shadow over half
  the face, low key (-2.5 stops and sensor noise), and the two extreme gammas. Enrolment stays
  clean: TAR at FAR 1e-3 over all (clean, relit) pairs of different images.

The teacher gets its own crop of the same view (its template and size, cut from the 112x112 crop by
the template-to-template map), as in training.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

FAR = 1e-3
BOOTSTRAPS = 200


def pair_indices(labels: np.ndarray, exclude_same_image: bool = True):
    """Upper-triangle pairs (i < j) as index arrays and their same/different flag."""
    first, second = np.triu_indices(len(labels), k=1 if exclude_same_image else 0)
    return first, second, labels[first] == labels[second]


def weighted_tar(genuine: np.ndarray, g_weight: np.ndarray, impostor_sorted: np.ndarray,
                 i_weight_sorted: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, threshold): the threshold is the lowest score with impostor weight above it at most
    `far` of the total; impostors given in descending score order."""
    cumulative = np.cumsum(i_weight_sorted)
    allowed = far * cumulative[-1]
    k = int(np.searchsorted(cumulative, allowed, side="right"))  # impostors strictly above
    threshold = impostor_sorted[k] if k < len(impostor_sorted) else -np.inf
    accepted = genuine > threshold
    return float((g_weight * accepted).sum() / g_weight.sum()), float(threshold)


def identity_draws(n_ids: int, bootstraps: int, seed: int) -> list[np.ndarray]:
    """The bootstrap's draws: how often each identity was drawn, per draw (a seed gives the same
    draws to every model, which is what makes a paired difference)."""
    rng = np.random.default_rng(seed)
    return [np.bincount(rng.integers(0, n_ids, n_ids), minlength=n_ids).astype(np.float64)
            for _ in range(bootstraps)]


class PairScores:
    """One model's genuine and impostor scores, impostors sorted by score, with identities."""

    def __init__(self, scores_g: np.ndarray, ids_g: np.ndarray, scores_i: np.ndarray,
                 ids_i: tuple[np.ndarray, np.ndarray]):
        order = np.argsort(-scores_i, kind="stable")
        self.genuine, self.ids_g = scores_g, ids_g
        self.impostor, self.a, self.b = scores_i[order], ids_i[0][order], ids_i[1][order]

    def tar(self, far: float, counts: np.ndarray | None = None) -> tuple[float, float]:
        """(TAR, threshold), pairs weighed by their identities' draw counts (None: all 1)."""
        if counts is None:
            return weighted_tar(self.genuine, np.ones(len(self.genuine)), self.impostor,
                                np.ones(len(self.impostor)), far)
        return weighted_tar(self.genuine, counts[self.ids_g], self.impostor,
                            counts[self.a] * counts[self.b], far)

    def drawable(self, counts: np.ndarray) -> bool:
        return counts[self.ids_g].sum() > 0 and (counts[self.a] * counts[self.b]).sum() > 0


def tar_at_far(scores_g: np.ndarray, ids_g: np.ndarray, scores_i: np.ndarray,
               ids_i: tuple[np.ndarray, np.ndarray], n_ids: int, far: float = FAR,
               bootstraps: int = BOOTSTRAPS, seed: int = 0) -> dict:
    """TAR at `far` with the identity bootstrap. ids_g: the identity of each genuine pair;
    ids_i: the two identities of each impostor pair."""
    pairs = PairScores(scores_g, ids_g, scores_i, ids_i)
    tar, threshold = pairs.tar(far)
    spread = np.array([pairs.tar(far, counts)[0] for counts in identity_draws(n_ids, bootstraps, seed)
                       if pairs.drawable(counts)])
    return {"tar": round(tar, 4), "threshold": threshold,
            "std": round(float(spread.std()), 4),
            "ci95": [round(float(np.percentile(spread, 2.5)), 4),
                     round(float(np.percentile(spread, 97.5)), 4)],
            "genuine_pairs": int(len(scores_g)), "impostor_pairs": int(len(scores_i))}


def all_pair_scores(embeddings: np.ndarray, labels: np.ndarray) -> PairScores:
    first, second, same = pair_indices(labels)
    scores = np.einsum("ij,ij->i", embeddings[first], embeddings[second])
    return PairScores(scores[same], labels[first][same], scores[~same],
                      (labels[first][~same], labels[second][~same]))


def cross_pair_scores(clean: np.ndarray, probe: np.ndarray, labels: np.ndarray) -> PairScores:
    scores = clean @ probe.T
    i, j = np.nonzero(~np.eye(len(labels), dtype=bool))
    same = labels[i] == labels[j]
    s = scores[i, j]
    return PairScores(s[same], labels[i][same], s[~same], (labels[i][~same], labels[j][~same]))


def all_pairs(embeddings: np.ndarray, labels: np.ndarray, **kw) -> dict:
    """TAR at FAR 1e-3 over every pair of the rows (unit vectors)."""
    pairs = all_pair_scores(embeddings, labels)
    return tar_at_far(pairs.genuine, pairs.ids_g, pairs.impostor, (pairs.a, pairs.b),
                      int(labels.max()) + 1, **kw)


def cross_pairs(clean: np.ndarray, probe: np.ndarray, labels: np.ndarray, **kw) -> dict:
    """TAR at FAR 1e-3 over every (clean image i, relit image j) pair with i != j."""
    pairs = cross_pair_scores(clean, probe, labels)
    return tar_at_far(pairs.genuine, pairs.ids_g, pairs.impostor, (pairs.a, pairs.b),
                      int(labels.max()) + 1, **kw)


def paired_difference(model: list[PairScores], reference: list[PairScores], n_ids: int,
                      far: float = FAR, bootstraps: int = BOOTSTRAPS, seed: int = 0) -> dict:
    """Mean TAR over the sets of `model` minus that of `reference` (the same pair sets, scored by
    two models), with the spread of that difference under the identity bootstrap: both models
    see the same draws, so what the two share (which identities are hard) cancels."""
    def mean_tar(sets: list[PairScores], counts: np.ndarray | None) -> float:
        return float(np.mean([p.tar(far, counts)[0] for p in sets]))

    diffs = np.array([mean_tar(model, c) - mean_tar(reference, c)
                      for c in identity_draws(n_ids, bootstraps, seed)
                      if all(p.drawable(c) for p in model)])
    return {"diff": round(mean_tar(model, None) - mean_tar(reference, None), 4),
            "std": round(float(diffs.std()), 4),
            "ci95": [round(float(np.percentile(diffs, 2.5)), 4),
                     round(float(np.percentile(diffs, 97.5)), 4)]}


# --- the stress set ------------------------------------------------------------------------

def _linear(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float64) / 255.0) ** 2.2


def _srgb(lin: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(255.0 * np.clip(lin, 0, 1) ** (1 / 2.2)), 0, 255).astype(np.uint8)


def side_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light from the left or the right: irradiance falls to 10% across the face."""
    w = img.shape[1]
    ramp = np.linspace(1.0, 0.1, w) if rng.random() < 0.5 else np.linspace(0.1, 1.0, w)
    return _srgb(_linear(img) * ramp[None, :, None])


def half_shadow(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One half of the face (split near the nose line) at 15% of the light, 3-pixel penumbra."""
    w = img.shape[1]
    x = np.arange(w) - (w / 2 + rng.uniform(-6, 6))
    lit = 1 / (1 + np.exp(-x / 3.0))
    if rng.random() < 0.5:
        lit = lit[::-1]
    return _srgb(_linear(img) * (0.15 + 0.85 * lit)[None, :, None])


def low_key_exposure(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """-2.5 stops with shot and read noise."""
    lin = _linear(img) * 2 ** -2.5
    noisy = rng.poisson(lin * 400) / 400 + rng.normal(0, 0.004, lin.shape)
    return _srgb(noisy)


def gamma_of(value: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(np.rint(255.0 * (img / 255.0) ** value), 0, 255).astype(np.uint8)
    return apply


RELIGHT = {"side light": side_light, "half shadow": half_shadow, "low key": low_key_exposure,
           "gamma 0.3": gamma_of(0.3), "gamma 3": gamma_of(3.0)}


def relit(crops: np.ndarray, condition: str) -> np.ndarray:
    """Every crop under `condition`, seeded by its row (the same set on every machine)."""
    fn = RELIGHT[condition]
    salt = list(RELIGHT).index(condition)
    return np.stack([fn(c, np.random.default_rng([salt, row])) for row, c in enumerate(crops)])


# --- embedding ------------------------------------------------------------------------------

def teacher_views(crops: np.ndarray, template: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The teacher's crops cut from 112x112 ArcFace crops (uint8 RGB)."""
    from lafs_edge.train.sources import template_change, warp

    change = template_change(None, template)
    return np.stack([warp(c, change, size[0], size[1]) for c in crops])


def report(embed: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, labels: np.ndarray,
           stress: bool = True) -> dict:
    """{"celeba": all-pairs figure, "stress": {condition: cross-pair figure}} of a function from
    uint8 crops (N, H, W, 3) to unit rows."""
    relit_sets = {c: embed(relit(crops, c)) for c in RELIGHT} if stress else None
    return report_of(embed(crops), relit_sets, labels)


def report_of(clean: np.ndarray, relit_sets: dict[str, np.ndarray] | None,
              labels: np.ndarray) -> dict:
    """`report` from the embeddings: the clean crops', and each relit set's by condition."""
    out = {"celeba": all_pairs(clean, labels)}
    if relit_sets is not None:
        out["stress"] = {c: cross_pairs(clean, relit_sets[c], labels, bootstraps=50)
                         for c in RELIGHT}
        out["stress_mean"] = round(float(np.mean([v["tar"] for v in out["stress"].values()])), 4)
    return out
