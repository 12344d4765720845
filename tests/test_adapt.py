"""On-device adaptation (`lafs-edge adapt`): it helps a weak embedder on real ORL faces without
raising the false-accept rate, it is stored with the model fingerprint, dropped when the people
change (a deleted person's data leaves the file), and bad requests are one clear line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lafs_edge.cli import main
from lafs_edge.gallery import Gallery, Shot
from lafs_edge.gallery.adapt import AdaptConfig, adapt_gallery, augment_crop, train_adapter
from lafs_edge.gallery.evaluate import few_shot_identification
from lafs_edge.gallery.pipeline import _png

pytestmark = pytest.mark.device

PEOPLE, PHOTOS = 18, 6      # ORL subset: 12 enrolled, 6 strangers


@pytest.fixture(scope="module")
def weak_artifact(tmp_path_factory):
    """A random-weights MobileFaceNet as a PyTorch artifact: a weak embedder with room to adapt."""
    from lafs_edge.models import create_model, save_checkpoint
    from lafs_edge.runtime.manifest import InputSpec, Manifest, write_manifest
    from lafs_edge.hashing import sha256_file

    folder = tmp_path_factory.mktemp("weak")
    torch.manual_seed(0)
    save_checkpoint(create_model("mobilefacenet").eval(), folder / "model.pt")
    write_manifest(Manifest(name="random-mobilefacenet", target="pytorch", model_file="model.pt",
                            model_sha256=sha256_file(folder / "model.pt"),
                            input=InputSpec(shape=[-1, 3, 112, 112]), alignment={},
                            embedding_dim=128), folder)
    return folder


@pytest.fixture(scope="module")
def orl_faces(shared_data, face_analyzer, weak_artifact):
    """ORL subset through detection + alignment: (embedder, vectors, PNG crops, labels)."""
    from lafs_edge.image import read_image
    from lafs_edge.runtime.embedder import Embedder

    embedder = Embedder.from_artifact(weak_artifact, threads=1)
    crops, labels = [], []
    for person in range(1, PEOPLE + 1):
        for photo in range(1, PHOTOS + 1):
            image = read_image(shared_data / "orl" / f"s{person}" / f"{photo}.pgm")
            faces = face_analyzer.analyze(image)
            crops.append(embedder.align(image, [faces[0].points5])[0])
            labels.append(f"s{person}")
    vectors = embedder.embed_crops(crops)
    return embedder, vectors, [_png(c) for c in crops], np.array(labels)


def test_adaptation_helps_a_weak_embedder_and_never_adds_false_accepts(orl_faces):
    embedder, vectors, crops, labels = orl_faces
    scores = vectors @ vectors.T
    impostor = scores[labels[:, None] != labels[None, :]]
    threshold = float(np.quantile(impostor, 0.99))
    config = AdaptConfig(views=6, steps=150)
    base, adapted = [], []
    for seed in range(2):
        common = dict(threshold=threshold, fingerprint=embedder.fingerprint,
                      stranger_fraction=1 / 3, seed=seed, crops=crops)
        base.append(few_shot_identification(vectors, labels, 1, **common))
        adapted.append(few_shot_identification(
            vectors, labels, 1, adapt=lambda g: adapt_gallery(g, embedder, config), **common))
    rank1 = lambda runs: np.mean([r.rank1 for r in runs])
    assert rank1(adapted) >= rank1(base) + 0.03, (rank1(base), rank1(adapted))
    for b, a in zip(base, adapted):
        # the open-set decision stays on the model's own cosine: never more strangers named
        assert a.false_accept <= b.false_accept


def test_train_adapter_separates_classes_the_base_space_confuses():
    """Two people whose embeddings differ only along one weak direction, swamped by nuisance
    variation: the prototypes alone (class means) confuse them, the adapted space does not."""
    rng = np.random.default_rng(0)
    dim, n = 32, 200
    labels = np.repeat([0, 1], n // 2)
    x = np.zeros((n, dim), np.float32)
    x[:, 0] = 1.0                                          # shared component
    x[:, 1] = np.where(labels == 0, 0.03, -0.03)           # identity, weak
    x[:, 2:] = rng.normal(0, 0.08, (n, dim - 2))           # nuisance, strong
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    means = np.stack([x[labels == c].mean(0) for c in (0, 1)])
    base = np.mean((x @ means.T).argmax(1) == labels)
    adapter = train_adapter(x, labels, ["a", "b"], "fp", AdaptConfig(steps=200))
    assert np.mean(adapter.scores(x).argmax(1) == labels) > max(base + 0.1, 0.9)
    identity = train_adapter(x, labels, ["a", "b"], "fp", AdaptConfig(steps=1, lr=0.0))
    assert np.allclose(identity.transform(x), x, atol=1e-6)    # starts as the identity


def test_collapsed_model_is_refused():
    """Different people at cosine ~0.999 (a collapsed model): adapting is refused, not done."""
    from lafs_edge.errors import UserError
    from lafs_edge.gallery.adapt import check_spread

    rng = np.random.default_rng(0)
    x = np.ones((6, 16), np.float32) + rng.normal(0, 0.01, (6, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with pytest.raises(UserError, match="too collapsed"):
        check_spread(x, np.array([0, 0, 1, 1, 2, 2]))
    assert check_spread(np.eye(6, dtype=np.float32), np.arange(6)) == 0.0


def test_augment_crop_changes_pixels_but_keeps_shape():
    rng = np.random.default_rng(1)
    crop = (np.arange(112 * 112 * 3) % 251).astype(np.uint8).reshape(112, 112, 3)
    views = [augment_crop(crop, rng) for _ in range(5)]
    assert all(v.shape == crop.shape and v.dtype == np.uint8 for v in views)
    assert all(np.mean(np.abs(v.astype(int) - crop)) > 1 for v in views)


def _gallery_of(path, embedder, vectors, crops, labels, people):
    gallery = Gallery(path)
    for person in people:
        rows = np.flatnonzero(labels == person)[:2]
        gallery.enroll(person, [Shot(vectors[r], f"row {r}", crops[r]) for r in rows],
                       embedder.fingerprint, embedder.label)
    return gallery


def test_adapter_stored_with_fingerprint_and_dropped_when_people_change(orl_faces, tmp_path):
    embedder, vectors, crops, labels = orl_faces
    path = tmp_path / "people.db"
    with _gallery_of(path, embedder, vectors, crops, labels, ["s1", "s2", "s3"]) as gallery:
        report = adapt_gallery(gallery, embedder, AdaptConfig(views=2, steps=20))
        assert report.people == 3 and report.views == 3 * 2 * 3
        adapter = gallery.adapter(embedder.fingerprint)
        assert adapter is not None and sorted(adapter.people) == ["s1", "s2", "s3"]
        assert gallery.adapter("another model") is None
        secret = adapter.prototypes[1].tobytes()
        query = vectors[np.flatnonzero(labels == "s2")[3]]
        assert gallery.identify(query, embedder.fingerprint, -1.0)[0].best is not None
        gallery.delete("s2")
        assert gallery.adapter(embedder.fingerprint) is None
    for suffix in ("", "-wal"):
        data = (tmp_path / f"people.db{suffix}")
        assert not data.exists() or secret not in data.read_bytes()
    with Gallery(path) as gallery:
        adapt_gallery(gallery, embedder, AdaptConfig(views=1, steps=5))
        row = np.flatnonzero(labels == "s4")[0]
        gallery.enroll("s4", [Shot(vectors[row], "new", crops[row])], embedder.fingerprint)
        assert gallery.adapter(embedder.fingerprint) is None   # trained on the old people


def test_adapt_cli(orl_faces, weak_artifact, tmp_path, capsys):
    embedder, vectors, crops, labels = orl_faces
    path = tmp_path / "people.db"
    with _gallery_of(path, embedder, vectors, crops, labels, ["s1"]):
        pass
    args = ["adapt", "--gallery", str(path), "--model", str(weak_artifact), "--views", "2",
            "--steps", "10"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least two enrolled people" in err[0]
    with Gallery(path) as gallery:
        row = np.flatnonzero(labels == "s2")[0]
        gallery.enroll("s2", [Shot(vectors[row], "no crop")], embedder.fingerprint)
    assert main(args) == 2
    assert "no enrollment crops stored for s2" in capsys.readouterr().err
    assert main(["adapt", "--gallery", str(tmp_path / "none.db"), "--model",
                 str(weak_artifact)]) == 2
    assert "no gallery" in capsys.readouterr().err
    with Gallery(path) as gallery:
        gallery.delete("s2")
        gallery.enroll("s2", [Shot(vectors[row], "crop", crops[row])], embedder.fingerprint)
    assert main(args) == 0
    assert "adapted 2 people from 3 crops (9 views)" in capsys.readouterr().out
    assert main(["adapt", "--gallery", str(path), "--remove"]) == 0
    with Gallery(path) as gallery:
        assert gallery.adapter(embedder.fingerprint) is None
