"""1:1 verification metrics from similarity scores: the ROC, k-fold accuracy, TAR at FAR, pairs.
A core module: `lafs-edge eval`, training's evaluation, export's threshold and `verify` use it.

Scores are cosine similarities (higher = more alike); a pair is called "same" when its score is
>= the threshold. Conventions follow InsightFace's `verification.py`: 10 contiguous folds in
file order, the threshold that maximises accuracy on 9 folds is applied to the 10th. Instead of
InsightFace's fixed threshold grid the best threshold is searched exactly (every gap between
sorted training scores), which can only match or beat the grid's training accuracy.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics
from sklearn.model_selection import KFold

from lafs_edge.errors import UserError

DEFAULT_FARS = (1e-2, 1e-3, 1e-4, 1e-5)


def _check(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    issame = np.asarray(issame, dtype=bool).ravel()
    if scores.shape != issame.shape or scores.size == 0:
        raise UserError(f"need one score per pair, got {scores.size} scores for {issame.size} labels")
    if not np.all(np.isfinite(scores)):
        raise UserError("scores contain NaN or inf (a model or embedding problem)")
    return scores, issame


def roc_curve(scores, issame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, thresholds decreasing, starting at +inf
    (nothing accepted): scikit-learn's `roc_curve(drop_intermediate=False)`, so tied scores are
    one point (all pairs at a threshold are accepted together), after checks that raise a
    UserError where scikit-learn would only warn."""
    scores, issame = _check(scores, issame)
    if issame.all() or not issame.any():
        raise UserError("ROC needs both genuine and impostor pairs")
    return metrics.roc_curve(issame, scores, drop_intermediate=False)


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """The highest true-accept rate over thresholds whose false-accept rate is <= `far`."""
    return float(tpr[fpr <= far].max())


def best_threshold(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of `score >= threshold` on these pairs.

    The threshold is the midpoint of the best gap between neighbouring distinct scores (or
    just outside the range when accepting all or none is best); among equally accurate
    thresholds the highest wins (fewest false accepts)."""
    fpr, tpr, thresholds = roc_curve(scores, issame)
    positives, negatives = issame.sum(), (~issame).sum()
    correct = tpr * positives + (1 - fpr) * negatives
    best = int(np.argmax(correct))
    distinct = thresholds[1:]
    if best == 0:  # reject everything
        threshold = distinct[0] + 1e-6
    elif best == len(distinct):  # accept everything
        threshold = distinct[-1]
    else:
        threshold = (distinct[best - 1] + distinct[best]) / 2
    return float(threshold), float(correct[best] / issame.size)


def kfold_accuracy(scores, issame, folds: int = 10) -> dict:
    """Mean and std of test-fold accuracy with the threshold chosen on the other folds."""
    scores, issame = _check(scores, issame)
    if not 2 <= folds <= scores.size:
        raise UserError(f"{scores.size} pairs cannot make {folds} folds (need 2 to {scores.size})")
    accuracies, thresholds = [], []
    for train, test in KFold(n_splits=folds).split(scores):  # contiguous folds, file order
        threshold, _ = best_threshold(scores[train], issame[train])
        accuracies.append(np.mean((scores[test] >= threshold) == issame[test]))
        thresholds.append(threshold)
    return {"accuracy": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
            "threshold": float(np.mean(thresholds)), "fold_accuracies": [float(a) for a in accuracies]}


def verification_report(scores, issame, fars=DEFAULT_FARS, folds: int = 10) -> dict:
    """Accuracy (k-fold), AUC, TAR at each FAR (with whether enough impostors exist to resolve it)."""
    scores, issame = _check(scores, issame)
    fpr, tpr, _ = roc_curve(scores, issame)
    negatives = int((~issame).sum())
    report = {"pairs": int(scores.size), "genuine": int(issame.sum()), "impostor": negatives,
              **kfold_accuracy(scores, issame, folds), "auc": float(metrics.auc(fpr, tpr)),
              "tar_at_far": {}}
    for far in fars:
        report["tar_at_far"][f"{far:g}"] = {"tar": tar_at_far(fpr, tpr, far),
                                           "resolvable": bool(negatives * far >= 1)}
    return report


def pair_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows `first[i]` and `second[i]` of L2-normalised `embeddings`."""
    return np.einsum("ij,ij->i", embeddings[first], embeddings[second]).astype(np.float64)


def make_pairs(labels, seed: int = 0, max_genuine: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, issame): every genuine pair (or `max_genuine` of them) and as many impostor
    pairs drawn without repeats, shuffled with `seed` so folds mix both kinds."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(labels.size, k=1)
    same = labels[i] == labels[j]
    genuine = np.nonzero(same)[0]
    impostor = np.nonzero(~same)[0]
    if genuine.size == 0 or impostor.size == 0:
        raise UserError("need at least two images of one identity and two identities for pairs")
    if max_genuine is not None and genuine.size > max_genuine:
        genuine = rng.choice(genuine, max_genuine, replace=False)
    impostor = rng.choice(impostor, min(genuine.size, impostor.size), replace=False)
    chosen = rng.permutation(np.r_[genuine, impostor])
    return i[chosen], j[chosen], same[chosen]
