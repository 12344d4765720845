"""The views distillation trains on: what the student sees and what its target is computed from.

- `DistillViews` (`distill.targets=online`): each face is warped once with a random small pose
  (`random_pose`: flip, rotation, scale, shift) for the student's 112x112 ArcFace crop AND, when
  the teacher expects another crop (an external model's template and size), for the teacher's
  crop of the same view: M_teacher = C A M_student with C = M_t M_s^-1 the change from the
  student's template to the teacher's, computed from the face's own 5 points, so both are cut
  from the original pixels. The training process runs the teacher (DistillTask.loss).
- `MirrorTarget` (`distill.targets=cached`): a cached clean crop or its mirror image (`MIRROR`),
  paired with the teacher's embedding of exactly that view (train/teacher_targets.py).
- `ConsistentViews` + `TeacherCollate` (`distill.targets=loader`, consistent teaching): the
  teacher embeds the exact view the student sees, inside the data loader's workers, so the
  training process only runs the student.

Consistent teaching: each face is warped once into the student's 112x112 crop with a random pose
and a jitter of its 5 points (the device's MediaPipe points disagree with the pool's by a few
pixels), then degraded the way in-the-wild faces are: harsh illumination (extreme gamma,
one-sided shading, a cast shadow, low contrast, low key), colour jitter and grey, low resolution,
blur, JPEG, an occluding rectangle. A worker's collate mixes some faces with another of the batch
(mixup), cuts the teacher's crop out of each finished student view (`template_change`: the
teacher's own template and size) and runs the teacher on the whole batch, so every degradation
reaches both models. Ranges and probabilities: the `augment` and `augment.hard` sections of
configs/distill.yaml.
"""
from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from lafs_edge.align import CROP_SIZE
from lafs_edge.train.sources import chw_uint8, normalise, student_matrix, template_change, warp

if TYPE_CHECKING:
    from lafs_edge.train.teachers import TeacherGeometry

GREY = np.array([0.299, 0.587, 0.114], np.float32)


def random_pose(rng: np.random.Generator, aug: dict[str, Any], size: int = CROP_SIZE) -> np.ndarray:
    """3x3 affine on crop pixels: flip, rotation, scale about the centre, then a shift."""
    centre = (size - 1) / 2
    angle = np.deg2rad(rng.uniform(-aug["rotate_deg"], aug["rotate_deg"]))
    scale = rng.uniform(*aug["scale"])
    shift = rng.uniform(-aug["shift"], aug["shift"], 2) * size
    flip = -1.0 if rng.random() < aug["flip"] else 1.0
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.diag([flip, 1.0])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre + shift - linear @ np.array([centre, centre])
    return matrix


class DistillViews:
    """(image, points, label), rng -> {"student": (3, 112, 112), ["teacher": (3, H, W)],
    "label"}: one random pose, cut for the student's crop and (if different) the teacher's."""

    def __init__(self, aug: dict[str, Any], teacher: TeacherGeometry):
        self.aug, self.teacher = aug, teacher

    def __call__(self, item, rng: np.random.Generator) -> dict[str, Any]:
        return self.cut(item, random_pose(rng, self.aug))

    def cut(self, item, pose: np.ndarray) -> dict[str, Any]:
        image, points, label = item
        m_student = student_matrix(points)
        crop = warp(image, pose @ m_student, CROP_SIZE, CROP_SIZE)
        out = {"student": chw_uint8(crop), "label": int(label)}
        if not self.teacher.is_student_crop:
            change = template_change(points, self.teacher.template)
            width, height = self.teacher.crop_size
            out["teacher"] = chw_uint8(warp(image, change @ pose @ m_student, width, height))
        return out


# The mirror image of a 112x112 crop, as a pose (the cached targets' second view).
MIRROR = np.array([[-1.0, 0.0, CROP_SIZE - 1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


class MirrorTarget:
    """(crop, targets, label), rng -> a view dict: mirrored with probability augment.flip,
    paired with the teacher's embedding of exactly that view."""

    def __init__(self, flip: float):
        self.flip = flip

    def __call__(self, item, rng: np.random.Generator) -> dict[str, Any]:
        crop, targets, label = item
        mirrored = rng.random() < self.flip
        return {"student": crop.flip(-1) if mirrored else crop,
                "target": targets[int(mirrored)], "label": label}


# --- consistent teaching (targets=loader) ---------------------------------------------------

def jittered(points: np.ndarray | None, sigma_px: float, rng: np.random.Generator):
    """The 5 points moved by N(0, sigma^2) crop pixels each (scaled to the source image)."""
    if points is None or sigma_px <= 0:
        return points
    crop_per_source = np.sqrt(abs(np.linalg.det(student_matrix(points)[:2, :2])))
    return points + rng.normal(0.0, sigma_px / crop_per_source, points.shape)


# --- degradations: float32 RGB (H, W, 3) in [0, 255] -> the same ---------------------------

def gamma(img: np.ndarray, rng: np.random.Generator, hard: dict[str, Any]) -> np.ndarray:
    g = np.exp(rng.uniform(*np.log(hard["gamma"])))
    return 255.0 * (img / 255.0) ** g


def one_sided_light(img: np.ndarray, rng: np.random.Generator, hard: dict[str, Any]) -> np.ndarray:
    """Light from one side: a multiplicative ramp from 1 down to 0.1-0.6 across the face."""
    h, w = img.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = ((xs - w / 2) * np.cos(angle) + (ys - h / 2) * np.sin(angle)) / (0.5 * max(h, w))
    dark = rng.uniform(0.1, 0.6)
    ramp = np.clip(0.5 + 0.5 * t, 0, 1) ** rng.uniform(0.5, 2.0)
    return img * (1 - (1 - dark) * ramp)[..., None]


def cast_shadow(img: np.ndarray, rng: np.random.Generator, hard: dict[str, Any]) -> np.ndarray:
    """A hard-edged shadow over a random half-plane (nose, brim, window frame)."""
    h, w = img.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    offset = rng.uniform(-0.3, 0.3) * w
    side = (xs - w / 2) * np.cos(angle) + (ys - h / 2) * np.sin(angle) - offset
    soft = rng.uniform(1.0, 6.0)
    mask = 1 / (1 + np.exp(-side / soft))
    return img * (1 - (1 - rng.uniform(0.15, 0.5)) * mask)[..., None]


def low_contrast(img: np.ndarray, rng: np.random.Generator, hard: dict[str, Any]) -> np.ndarray:
    factor = rng.uniform(0.25, 0.6)
    return img.mean() + factor * (img - img.mean()) + rng.uniform(-40, 40)


def low_key(img: np.ndarray, rng: np.random.Generator, hard: dict[str, Any]) -> np.ndarray:
    """Underexposed: dark and noisy."""
    dark = img * rng.uniform(0.1, 0.45)
    return dark + rng.normal(0, rng.uniform(0.5, 4.0), img.shape).astype(np.float32)


ILLUMINATION = (gamma, one_sided_light, cast_shadow, low_contrast, low_key)


def colour(img: np.ndarray, rng: np.random.Generator, aug: dict[str, Any]) -> np.ndarray:
    """Brightness, contrast and saturation jitter (the hue term of color_jitter is left out)."""
    b, c, s, _ = aug["color_jitter"]
    img = img * rng.uniform(1 - b, 1 + b)
    mean = img.mean()
    img = mean + rng.uniform(1 - c, 1 + c) * (img - mean)
    grey = (img @ GREY)[..., None]
    return grey + rng.uniform(1 - s, 1 + s) * (img - grey)


def low_resolution(img: np.ndarray, rng: np.random.Generator, hard: dict[str, Any]) -> np.ndarray:
    h, w = img.shape[:2]
    scale = rng.uniform(*hard["low_res_scale"])
    small = cv2.resize(img, (max(4, round(w * scale)), max(4, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg(img: np.ndarray, rng: np.random.Generator, hard: dict[str, Any]) -> np.ndarray:
    quality = int(rng.integers(hard["jpeg_quality"][0], hard["jpeg_quality"][1] + 1))
    ok, data = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if ok else None
    return img if decoded is None else decoded.astype(np.float32)


def erase(img: np.ndarray, rng: np.random.Generator, hard: dict[str, Any]) -> np.ndarray:
    """An occluder: a rectangle of flat colour or noise (hand, phone, mask, scarf)."""
    h, w = img.shape[:2]
    area = rng.uniform(*hard["erase_area"]) * h * w
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
    eh, ew = min(h, int(np.sqrt(area * aspect))), min(w, int(np.sqrt(area / aspect)))
    y, x = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
    out = img.copy()
    out[y:y + eh, x:x + ew] = rng.uniform(0, 255, 3) if rng.random() < 0.5 else \
        rng.uniform(0, 255, (eh, ew, 3))
    return out


def degrade(crop: np.ndarray, rng: np.random.Generator, aug: dict[str, Any]) -> np.ndarray:
    """uint8 RGB crop -> the same, through the configured degradations (each by its
    probability, in the order a camera adds them: light, sensor, optics, compression)."""
    hard = aug["hard"]
    img = crop.astype(np.float32)
    if rng.random() < hard["illumination_prob"]:
        img = ILLUMINATION[int(rng.integers(len(ILLUMINATION)))](img, rng, hard)
    if rng.random() < aug["jitter_prob"]:
        img = colour(img, rng, aug)
    if rng.random() < aug["grayscale_prob"]:
        img = np.repeat((img @ GREY)[..., None], 3, axis=2)
    if rng.random() < hard["erase_prob"]:
        img = erase(img, rng, hard)
    if rng.random() < hard["low_res_prob"]:
        img = low_resolution(img, rng, hard)
    if rng.random() < aug["blur_prob"]:
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), rng.uniform(*aug["blur_sigma"])), np.float32)
    img = np.clip(img, 0, 255)
    if rng.random() < hard["jpeg_prob"]:
        img = jpeg(img, rng, hard)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


class ConsistentViews:
    """(image, points, label), rng -> {"student": uint8 (3, 112, 112), "change": (3, 3) from
    the student's crop to the teacher's, "mix": partner weight, "label"}."""

    def __init__(self, aug: dict[str, Any], teacher_template: np.ndarray):
        self.aug, self.teacher_template = aug, teacher_template

    def __call__(self, item, rng: np.random.Generator) -> dict[str, Any]:
        image, points, label = item
        aug = self.aug
        moved = jittered(points, aug["hard"]["point_jitter"], rng)
        crop = warp(image, random_pose(rng, aug) @ student_matrix(moved), CROP_SIZE, CROP_SIZE)
        mix = rng.uniform(0.0, 0.5) if rng.random() < aug["hard"]["mixup_prob"] else 0.0
        return {"student": chw_uint8(degrade(crop, rng, aug)), "label": int(label),
                "change": torch.from_numpy(template_change(moved, self.teacher_template)),
                "mix": mix}


@functools.cache
def worker_teacher(spec: str):
    """One teacher per process (a loader worker), on one CPU thread."""
    from lafs_edge.train.teachers import load_teacher

    return load_teacher(spec, torch.device("cpu"), threads=1)


class TeacherCollate:
    """A batch of `ConsistentViews` items -> {"student": uint8 (B, 3, 112, 112), "target":
    the teacher's embedding of each finished view (B, D), "label"}. Runs in the worker."""

    def __init__(self, teacher_spec: str, crop_size: tuple[int, int]):
        self.teacher_spec, self.crop_size = teacher_spec, crop_size

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        student = mixed(torch.stack([it["student"] for it in items]),
                        torch.tensor([it["mix"] for it in items], dtype=torch.float32))
        width, height = self.crop_size
        views = np.stack([warp(np.ascontiguousarray(s.permute(1, 2, 0).numpy()),
                               it["change"].numpy(), width, height)
                          for s, it in zip(student, items)])
        teacher = worker_teacher(self.teacher_spec)
        target, _ = teacher(normalise(torch.from_numpy(views).permute(0, 3, 1, 2)))
        return {"student": student, "target": target.float(),
                "label": torch.tensor([it["label"] for it in items])}


def mixed(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mixup inside the batch: row i becomes (1-w_i) x_i + w_i x_{i+1} (w_i = 0: unchanged)."""
    if not bool((weights > 0).any()):
        return images
    partner = images.roll(-1, 0).float()
    w = weights.view(-1, 1, 1, 1)
    return ((1 - w) * images.float() + w * partner).round().clamp(0, 255).to(torch.uint8)


def single_thread_worker() -> None:
    """Loader workers share two cores with the training process: one thread each."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
