"""The one face crop used everywhere: training readers, the device pipeline and the tests.

A 5-point similarity transform (Umeyama, no reflection) maps detected points onto the ArcFace
112x112 template; `cv2.warpAffine` with bilinear interpolation cuts the crop. Training and the
device call the same `align_face`, so their crops are identical by construction.
"""
from __future__ import annotations

import numpy as np

# ArcFace template for a 112x112 crop: left eye, right eye, nose tip, left and right mouth corner
# (image-left first), in pixels.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
CROP_SIZE = 112


def template_for(width: int, height: int, base: np.ndarray = ARCFACE_TEMPLATE_112,
                 base_size: tuple[float, float] = (112, 112)) -> np.ndarray:
    """The template scaled to another crop size (e.g. 128x128 for an external model)."""
    return base * np.array([width / base_size[0], height / base_size[1]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity transform taking `src` points onto `dst`.

    Umeyama (1991): rotation, uniform scale and translation; reflections are excluded.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N, 2) point sets, got {src.shape} and {dst.shape}")
    if not np.all(np.isfinite(src)):
        raise ValueError("landmarks contain NaN or inf")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise ValueError("landmarks are degenerate (all points coincide)")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def align_face(image: np.ndarray, points: np.ndarray, size: int = CROP_SIZE,
               template: np.ndarray | None = None, crop_width: int | None = None) -> np.ndarray:
    """Warp `image` (H, W[, C], uint8) so its 5 `points` land on the template; returns the crop.

    `size` is the crop height; `crop_width` defaults to `size` (96x112 crops pass both).
    """
    import cv2

    width = crop_width or size
    if template is None:
        template = template_for(width, size)
    matrix = similarity_transform(np.asarray(points, dtype=np.float64).reshape(-1, 2), template)
    return cv2.warpAffine(image, matrix, (width, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
