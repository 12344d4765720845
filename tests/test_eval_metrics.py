"""Verification, IJB template and k-shot metrics. The ROC and the folds come from scikit-learn;
what is built on them (TAR at FAR, AUC, the accuracy threshold, k-fold accuracy, the export
threshold) is checked against independent computations (roc_auc_score, brute-force loops)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from sklearn.model_selection import KFold

from lafs_edge.errors import UserError
from lafs_edge.train.evaluate.ijb import IJBMeta, evaluate_ijb, template_features
from lafs_edge.train.evaluate.kshot import identification_report, kshot_split, open_set_threshold
from lafs_edge.train.evaluate.verification import load_bin, write_bin
from lafs_edge.verification import (best_threshold, kfold_accuracy, make_pairs, roc_curve,
                                    tar_at_far, verification_report)

pytestmark = pytest.mark.evaluation


def _scores(n=2000, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.4
    scores = rng.normal(0.0, 0.2, n) + 0.35 * issame
    if ties:
        scores = np.round(scores, 2)  # many tied scores
    return scores, issame


@pytest.mark.parametrize("ties", [True, False])
def test_roc_matches_sklearn(ties):
    scores, issame = _scores(ties=ties)
    fpr, tpr, thresholds = roc_curve(scores, issame)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(issame, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thr[1:])
    report = verification_report(scores, issame, fars=(1e-1, 1e-2, 1e-3))
    assert report["auc"] == pytest.approx(roc_auc_score(issame, scores), abs=1e-12)
    for far in (1e-1, 1e-2, 1e-3):
        expected = sk_tpr[sk_fpr <= far].max()
        assert report["tar_at_far"][f"{far:g}"]["tar"] == pytest.approx(expected)
        assert tar_at_far(fpr, tpr, far) == pytest.approx(expected)
    assert report["tar_at_far"]["0.001"]["resolvable"] is True  # ~1200 impostors


def _brute_best_accuracy(scores, issame):
    candidates = np.r_[np.unique(scores), np.inf]
    return max(np.mean((scores >= t) == issame) for t in candidates)


def test_best_threshold_is_optimal():
    scores, issame = _scores(300, seed=3)
    threshold, accuracy = best_threshold(scores, issame)
    assert accuracy == pytest.approx(_brute_best_accuracy(scores, issame))
    assert np.mean((scores >= threshold) == issame) == pytest.approx(accuracy)


def test_kfold_accuracy_matches_independent_loop():
    scores, issame = _scores(1003, seed=5)
    result = kfold_accuracy(scores, issame, folds=10)
    expected = []
    for train, test in KFold(n_splits=10, shuffle=False).split(scores):
        # Brute force over "reject all" and "accept >= c" for each distinct training score,
        # highest threshold first (ties go to it), then the documented mid-gap threshold.
        distinct = np.unique(scores[train])[::-1]
        options = np.r_[np.inf, distinct]
        train_acc = [np.mean((scores[train] >= t) == issame[train]) for t in options]
        best = int(np.argmax(train_acc))
        if best == 0:
            t = distinct[0] + 1e-6
        elif best == len(distinct):
            t = distinct[-1]
        else:
            t = (distinct[best - 1] + distinct[best]) / 2
        expected.append(np.mean((scores[test] >= t) == issame[test]))
    assert result["accuracy"] == pytest.approx(np.mean(expected))
    assert len(result["fold_accuracies"]) == 10


def test_threshold_at_far_accepts_tied_scores_together():
    from lafs_edge.convert.manifest import threshold_at_far

    # Identity 0 twice at 0 degrees, identities 1 and 2 at +-60: the genuine pair scores 1, four
    # impostor pairs tie at cos 60 = 0.5 and one scores -0.5 (FAR 0, 4/5, 1 at those thresholds).
    angles = np.radians([0.0, 0.0, 60.0, -60.0])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], 1)
    labels = np.array([0, 0, 1, 2])
    assert threshold_at_far(embeddings, labels, 0.5) == pytest.approx(1.0)  # not inside the tie
    assert threshold_at_far(embeddings, labels, 0.8) == pytest.approx(0.5)


def test_metrics_reject_bad_input():
    with pytest.raises(UserError, match="NaN"):
        roc_curve([0.1, np.nan], [True, False])
    with pytest.raises(UserError, match="genuine and impostor"):
        roc_curve([0.1, 0.2], [True, True])
    with pytest.raises(UserError, match="one score per pair"):
        roc_curve([0.1, 0.2], [True])
    with pytest.raises(UserError, match="cannot make 1 folds"):
        kfold_accuracy([0.1, 0.2, 0.3], [True, False, True], folds=1)


def test_make_pairs_is_seeded_and_balanced():
    labels = np.repeat(np.arange(6), 4)
    first, second, issame = make_pairs(labels, seed=2)
    again = make_pairs(labels, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip((first, second, issame), again))
    assert issame.sum() == 6 * 6 and (~issame).sum() == 36
    np.testing.assert_array_equal(labels[first] == labels[second], issame)
    assert len(set(zip(first.tolist(), second.tolist()))) == issame.size


def test_bin_round_trip_and_numpy_labels(tmp_path):
    images = [bytes([i]) * 10 for i in range(6)]
    write_bin(tmp_path / "a.bin", images, [True, False, True])
    loaded, issame = load_bin(tmp_path / "a.bin")
    assert loaded == images and issame.tolist() == [True, False, True]
    with open(tmp_path / "b.bin", "wb") as f:  # some converters store a numpy bool array
        pickle.dump((images, np.array([False, True, True])), f, protocol=2)
    assert load_bin(tmp_path / "b.bin")[1].tolist() == [False, True, True]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_bin_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump(([b"x", b"y"], [_Exploit(marker)]), f, protocol=2)
    with pytest.raises(UserError, match="refused to load (posix|nt|os).system"):
        load_bin(tmp_path / "evil.bin")
    assert not marker.exists()
    with open(tmp_path / "odd.bin", "wb") as f:
        pickle.dump(([b"x", b"y"], ["yes"]), f, protocol=2)
    with pytest.raises(UserError, match="booleans"):
        load_bin(tmp_path / "odd.bin")


def _reference_templates(features, templates, medias):
    """A direct transcription of the documented pooling, with dicts and loops."""
    pooled = {}
    for t in sorted(set(templates.tolist())):
        by_media = {}
        for f, tt, m in zip(features, templates, medias):
            if tt == t:
                by_media.setdefault(m, []).append(f)
        total = sum(np.mean(v, axis=0) for v in by_media.values())
        pooled[t] = total / np.linalg.norm(total)
    return pooled


def test_ijb_template_pooling_and_scores():
    rng = np.random.default_rng(1)
    n = 60
    templates = rng.integers(100, 110, n)
    medias = rng.integers(0, 4, n) + 10 * templates
    raw = rng.normal(size=(n, 8)) * rng.uniform(0.5, 2.0, (n, 1))
    det = rng.uniform(0.5, 1.0, n)
    feats, unique = template_features(raw, templates, medias)
    reference = _reference_templates(raw, templates, medias)
    for row, t in enumerate(unique):
        np.testing.assert_allclose(feats[row], reference[t])
    pairs = np.array([[a, b] for a in unique for b in unique if a < b])
    labels = rng.random(len(pairs)) < 0.5
    labels[:2] = [True, False]
    meta = IJBMeta(names=[f"{i}.jpg" for i in range(n)], templates=templates, medias=medias,
                   landmarks=np.zeros((n, 5, 2)), detector_scores=det, pairs=pairs, labels=labels)
    report = evaluate_ijb(raw, meta, norm_score=False, detector_score=True, fars=(0.1,))
    # Independent: normalise, weight by detector score, pool, cosine, sklearn ROC.
    weighted = raw / np.linalg.norm(raw, axis=1, keepdims=True) * det[:, None]
    ref = _reference_templates(weighted, templates, medias)
    scores = np.array([ref[a] @ ref[b] for a, b in pairs])
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    assert report["tar_at_far"]["0.1"]["tar"] == pytest.approx(tpr[fpr <= 0.1].max())
    assert report["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert report["templates"] == unique.size and report["pairs"] == len(pairs)


def test_kshot_identification_against_brute_force():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(12), 6)
    centres = rng.normal(size=(12, 16))
    emb = centres[labels] + rng.normal(scale=1.2, size=(labels.size, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    split = kshot_split(labels, k=2, unknown_fraction=0.25, seed=9)
    again = kshot_split(labels, k=2, unknown_fraction=0.25, seed=9)
    assert all(np.array_equal(split[key], again[key]) for key in split)
    assert len(set(labels[split["unknown"]].tolist())) == 3
    assert np.bincount(labels[split["enroll"]]).max() == 2
    report = identification_report(emb, labels, split, fars=(0.1, 0.5), ranks=(1, 5))
    known = sorted(set(labels[split["enroll"]].tolist()))
    gallery = {c: emb[split["enroll"]][labels[split["enroll"]] == c].mean(0) for c in known}
    gallery = {c: v / np.linalg.norm(v) for c, v in gallery.items()}
    ranks, best_scores, correct = [], [], []
    for p in split["probe"]:
        scored = sorted(((emb[p] @ gallery[c], c) for c in known), reverse=True)
        ranks.append([c for _, c in scored].index(labels[p]) + 1)
        best_scores.append(scored[0][0])
        correct.append(scored[0][1] == labels[p])
    assert report["rank1"] == pytest.approx(np.mean(np.array(ranks) <= 1))
    assert report["rank5"] == pytest.approx(np.mean(np.array(ranks) <= 5))
    impostor = np.array([max(emb[u] @ g for g in gallery.values()) for u in split["unknown"]])
    for far in (0.1, 0.5):
        threshold = report["dir_at_far"][f"{far:g}"]["threshold"]
        assert np.mean(impostor >= threshold + 1e-9) <= far  # +1e-9: the reference sums in another order
        assert np.mean(impostor >= threshold - 1e-9) > far  # and it is the lowest such threshold
        expected = np.mean(np.array(correct) & (np.array(best_scores) >= threshold))
        assert report["dir_at_far"][f"{far:g}"]["dir"] == pytest.approx(expected)


def test_open_set_threshold_edges():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    assert np.mean(scores >= open_set_threshold(scores, 0.0)) == 0
    assert np.mean(scores >= open_set_threshold(scores, 0.25)) == 0.25
    assert np.mean(scores >= open_set_threshold(scores, 0.5)) == 0.25  # tie at 0.5: both or none
    assert open_set_threshold(scores, 1.0) == -np.inf
