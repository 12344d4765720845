"""Augmentation for aligned 112x112 faces: flip, random resized crop, RandAugment, mixup.

Per-image ops work on RGB uint8 (H, W, 3) numpy arrays with an explicit `np.random.Generator`,
so a sample's augmentation depends only on the generator the caller seeds (the training loop
seeds it from (seed, epoch, index): identical on any number of ranks or workers, and exact on
resume). RandAugment follows Cubuk et al. 2020 with timm's magnitude ranges on a 0-10 scale;
geometric ops fill with black, the border value `align_face` uses. Mixup works on a batch of
normalised tensors and returns per-sample weights for mixing the two margin losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from lafs_edge.image import to_model_input
from lafs_edge.train.views import crop_and_resize, crop_boxes

MAX_LEVEL = 10.0


def hflip(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def random_resized_crop(image: np.ndarray, rng: np.random.Generator,
                        scale: Sequence[float] = (0.4, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """Crop a random area fraction in `scale` with aspect ratio in `ratio` out of a square face,
    resize back: the views' random resized crop (`views.crop_boxes`, `views.crop_and_resize`),
    drawn from a torch generator that `rng` seeds, on this one uint8 image."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    box = crop_boxes(1, scale, ratio, gen)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    crop = crop_and_resize(pixels, box, torch.zeros(1, dtype=torch.bool), image.shape[0])
    return crop[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


# --- RandAugment ops: (image, level in [0, 1], rng) -> image -----------------------------------

def _signed(value: float, rng: np.random.Generator) -> float:
    return value if rng.random() < 0.5 else -value


def _affine(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix.astype(np.float64), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _blend(image: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
    """PIL ImageEnhance semantics: other + factor * (image - other), clipped."""
    out = other + factor * (image.astype(np.float32) - other)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def op_identity(image, level, rng):
    return image


def op_autocontrast(image, level, rng):
    low = image.min(axis=(0, 1), keepdims=True).astype(np.float32)
    high = image.max(axis=(0, 1), keepdims=True).astype(np.float32)
    scale = np.where(high > low, 255.0 / np.maximum(high - low, 1), 1.0)
    offset = np.where(high > low, low, 0.0)
    return np.clip(np.rint((image - offset) * scale), 0, 255).astype(np.uint8)


def op_equalize(image, level, rng):
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(image[..., c])) for c in range(3)], -1)


def op_rotate(image, level, rng):
    h, w = image.shape[:2]
    angle = _signed(30.0 * level, rng)
    return _affine(image, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0))


def op_solarize(image, level, rng):
    threshold = 256 - int(256 * level)
    return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def op_posterize(image, level, rng):
    bits = 8 - int(4 * level)
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    return image & mask


def op_color(image, level, rng):  # saturation
    return _blend(image, _grey(image)[..., None], 1.0 + _signed(0.9 * level, rng))


def op_contrast(image, level, rng):
    return _blend(image, float(_grey(image).mean()), 1.0 + _signed(0.9 * level, rng))


def op_brightness(image, level, rng):
    return _blend(image, 0.0, 1.0 + _signed(0.9 * level, rng))


def op_sharpness(image, level, rng):
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
    smooth = cv2.filter2D(image.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REPLICATE)
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = image[0], image[-1], image[:, 0], image[:, -1]
    return _blend(image, smooth, 1.0 + _signed(0.9 * level, rng))


def op_shear_x(image, level, rng):
    return _affine(image, np.array([[1, _signed(0.3 * level, rng), 0], [0, 1, 0]]))


def op_shear_y(image, level, rng):
    return _affine(image, np.array([[1, 0, 0], [_signed(0.3 * level, rng), 1, 0]]))


def op_translate_x(image, level, rng):
    return _affine(image, np.array([[1, 0, _signed(0.45 * level * image.shape[1], rng)], [0, 1, 0]]))


def op_translate_y(image, level, rng):
    return _affine(image, np.array([[1, 0, 0], [0, 1, _signed(0.45 * level * image.shape[0], rng)]]))


RANDAUGMENT_OPS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "identity": op_identity, "autocontrast": op_autocontrast, "equalize": op_equalize,
    "rotate": op_rotate, "solarize": op_solarize, "posterize": op_posterize, "color": op_color,
    "contrast": op_contrast, "brightness": op_brightness, "sharpness": op_sharpness,
    "shear_x": op_shear_x, "shear_y": op_shear_y, "translate_x": op_translate_x,
    "translate_y": op_translate_y,
}


def rand_augment(image: np.ndarray, rng: np.random.Generator, num_ops: int = 2,
                 magnitude: float = 2.0) -> np.ndarray:
    """Apply `num_ops` ops drawn uniformly (with replacement) at `magnitude` on the 0-10 scale."""
    names = list(RANDAUGMENT_OPS)
    level = min(max(magnitude, 0.0), MAX_LEVEL) / MAX_LEVEL
    for _ in range(num_ops):
        image = RANDAUGMENT_OPS[names[int(rng.integers(len(names)))]](image, level, rng)
    return image


@dataclass
class FaceAugment:
    """Flip, random resized crop, RandAugment on an aligned face; returns RGB uint8."""

    flip: float = 0.5
    crop_prob: float = 0.5
    crop_scale: Sequence[float] = (0.4, 1.0)
    crop_ratio: Sequence[float] = (3 / 4, 4 / 3)
    randaugment_ops: int = 2
    randaugment_magnitude: float = 2.0

    @classmethod
    def from_config(cls, augment_cfg: dict) -> "FaceAugment":
        keys = ("flip", "crop_prob", "crop_scale", "crop_ratio", "randaugment_ops",
                "randaugment_magnitude")
        return cls(**{k: augment_cfg[k] for k in keys})

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.flip:
            image = hflip(image)
        if rng.random() < self.crop_prob:
            image = random_resized_crop(image, rng, self.crop_scale, self.crop_ratio)
        if self.randaugment_ops > 0:
            image = rand_augment(image, rng, self.randaugment_ops, self.randaugment_magnitude)
        return image


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1] (the project's one normalisation)."""
    return to_model_input(image)[0]


def mixup(images: torch.Tensor, prob: float, alpha: float, rng: np.random.Generator,
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """With probability `prob` mix the batch with a shuffled copy of itself.

    Returns (images, partner index (B,), weight (B,)): the loss is
    weight * loss(labels) + (1 - weight) * loss(labels[partner]). Without mixing the weight is 1
    and the partner is the sample itself, so callers need no special case.
    """
    b = images.shape[0]
    identity = torch.arange(b, device=images.device)
    if prob <= 0 or b < 2 or rng.random() >= prob:
        return images, identity, torch.ones(b, device=images.device)
    lam = float(rng.beta(alpha, alpha))
    partner = torch.from_numpy(rng.permutation(b)).to(images.device)
    mixed = lam * images + (1.0 - lam) * images[partner]
    return mixed, partner, torch.full((b,), lam, device=images.device)
