"""The enrollment quality gate: is this face worth keeping as a reference shot?

Three checks from the detected face alone (near-duplicates are the gallery's job, since they need
the person's stored vectors):
- size: the inter-ocular distance in the photo; below ~20 px the crop is mostly upsampled blur.
- sharpness: the variance of the Laplacian over the inner face of the 112x112 ArcFace crop
  (grey). Measured here: every ORL photo scores >= 65 and every Yale photo >= 98; after a
  Gaussian blur of sigma 1.5 / 2 / 3 the astronaut scores 42 / 19 / 7, ORL s4/1 23 / 10 / 4,
  Yale subject01 76 / 46 / 22 -> threshold 40.
- frontalness: the nose's sideways offset from the eye midpoint along the eye line, over half the
  inter-ocular distance (0 frontal, ~1 when the nose reaches an eye: a three-quarter profile).
  ORL's deliberate pose changes reach 0.70, Yale's frontal set 0.21 -> threshold 0.8.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lafs_edge.align import align_face

INNER_FACE = (slice(36, 104), slice(28, 84))  # rows, columns of the 112x112 ArcFace crop


@dataclass(frozen=True)
class QualityGate:
    min_eye_distance: float = 20.0
    min_sharpness: float = 40.0
    max_yaw: float = 0.8


def yaw_ratio(points5: np.ndarray) -> float:
    points5 = np.asarray(points5, np.float64)
    eye_line = points5[1] - points5[0]
    distance = float(np.linalg.norm(eye_line))
    offset = float(np.dot(points5[2] - (points5[0] + points5[1]) / 2, eye_line / distance))
    return offset / (distance / 2)


def sharpness(image: np.ndarray, points5: np.ndarray) -> float:
    import cv2

    crop = cv2.cvtColor(align_face(image, points5), cv2.COLOR_RGB2GRAY)
    # Inner face only (eyebrows to chin, cheek to cheek): a tight photo's crop has black borders
    # whose hard edges would read as sharpness however blurred the face is.
    return float(cv2.Laplacian(crop, cv2.CV_64F)[INNER_FACE].var())


def assess(image: np.ndarray, points5: np.ndarray, gate: QualityGate = QualityGate()
           ) -> tuple[list[str], dict]:
    """(reasons to reject - empty when the face passes, the measured values)."""
    points5 = np.asarray(points5, np.float64)
    metrics = {"eye_distance": round(float(np.linalg.norm(points5[1] - points5[0])), 2),
               "sharpness": round(sharpness(image, points5), 2),
               "yaw": round(yaw_ratio(points5), 3)}
    reasons = []
    if metrics["eye_distance"] < gate.min_eye_distance:
        reasons.append(f"face too small (eyes {metrics['eye_distance']:.0f} px apart, "
                       f"need {gate.min_eye_distance:.0f})")
    if metrics["sharpness"] < gate.min_sharpness:
        reasons.append(f"too blurry (sharpness {metrics['sharpness']:.0f}, "
                       f"need {gate.min_sharpness:.0f})")
    if abs(metrics["yaw"]) > gate.max_yaw:
        reasons.append(f"not frontal enough (yaw ratio {abs(metrics['yaw']):.2f}, "
                       f"max {gate.max_yaw:.2f})")
    return reasons, metrics
