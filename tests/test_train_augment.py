"""Face augmentation: determinism from the seed, op semantics, mixup weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lafs_edge.train.augment import (RANDAUGMENT_OPS, FaceAugment, hflip, mixup, rand_augment,
                                     random_resized_crop, to_tensor)

pytestmark = pytest.mark.training


@pytest.fixture()
def face():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)


def test_same_seed_same_image_different_seed_different_image(face):
    aug = FaceAugment(flip=0.5, crop_prob=1.0, randaugment_ops=2, randaugment_magnitude=2)
    a = aug(face, np.random.default_rng([1, 2, 3]))
    b = aug(face, np.random.default_rng([1, 2, 3]))
    c = aug(face, np.random.default_rng([1, 2, 4]))
    assert a.shape == (112, 112, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_every_randaugment_op_keeps_shape_and_dtype(face):
    for name, op in RANDAUGMENT_OPS.items():
        out = op(face, 0.2, np.random.default_rng(0))
        assert out.shape == face.shape and out.dtype == np.uint8, name


def test_magnitude_zero_leaves_the_photometric_and_geometric_ops_identity(face):
    changing = {"autocontrast", "equalize"}  # these ops have no magnitude
    for name, op in RANDAUGMENT_OPS.items():
        if name not in changing:
            assert np.array_equal(op(face, 0.0, np.random.default_rng(0)), face), name


def test_op_semantics(face):
    solar = RANDAUGMENT_OPS["solarize"](face, 1.0, None)  # threshold 0: every pixel inverted
    assert np.array_equal(solar, 255 - face)
    poster = RANDAUGMENT_OPS["posterize"](face, 1.0, None)  # 4 bits kept
    assert np.all(poster % 16 == 0) and np.all(face - poster < 16)
    ramp = np.tile(np.linspace(50, 150, 112, dtype=np.uint8)[None, :, None], (112, 1, 3))
    stretched = RANDAUGMENT_OPS["autocontrast"](ramp, 0.0, None)
    assert stretched.min() == 0 and stretched.max() == 255
    assert np.array_equal(hflip(face)[:, 0], face[:, -1])


def test_translate_moves_content_and_fills_black():
    image = np.full((112, 112, 3), 200, np.uint8)
    rng = np.random.default_rng(3)
    out = RANDAUGMENT_OPS["translate_x"](image, 1.0, rng)  # 0.45 * 112 = 50 px
    black_columns = int((out[56] == 0).all(axis=1).sum())
    assert 49 <= black_columns <= 51


def test_random_resized_crop_full_scale_is_identity(face):
    out = random_resized_crop(face, np.random.default_rng(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert np.array_equal(out, face)
    out = random_resized_crop(face, np.random.default_rng(0), scale=(0.25, 0.25), ratio=(1, 1))
    assert out.shape == face.shape and not np.array_equal(out, face)


def test_rand_augment_draws_ops_from_the_rng(face):
    outs = {rand_augment(face, np.random.default_rng(s), 2, 5).tobytes() for s in range(8)}
    assert len(outs) > 4


def test_to_tensor_range_and_layout(face):
    t = to_tensor(face)
    assert t.shape == (3, 112, 112) and t.dtype == torch.float32
    assert torch.allclose(t[:, 5, 7], (torch.from_numpy(face[5, 7]).float() - 127.5) / 127.5)


def test_mixup_weights_and_partners():
    images = torch.randn(6, 3, 4, 4)
    same, partner, weight = mixup(images, 0.0, 0.8, np.random.default_rng(0))
    assert same is images and torch.equal(partner, torch.arange(6)) and torch.all(weight == 1)
    mixed, partner, weight = mixup(images, 1.0, 0.8, np.random.default_rng(0))
    lam = float(weight[0])
    assert 0 < lam < 1 and torch.all(weight == lam)
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[partner], atol=1e-6)
    assert sorted(partner.tolist()) == list(range(6))
