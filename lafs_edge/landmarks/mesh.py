"""MediaPipe's 468-point face mesh on LiteRT, the region of interest it needs, and the 5 points.

ROI (face_detection_front_detection_to_roi.pbtxt): the detection box centre, rotated so the eye
keypoints lie level, square on the box's long side, enlarged 1.5x. For video the next frame's ROI
comes from the mesh itself (face_landmarks_to_roi.pbtxt: landmark box, eye corners 33 -> 263).
The network sees the ROI warped to 192x192, pixels in [0, 1]; it returns 468 (x, y, z) in those
192 pixels and a face-presence logit. We map the points back through the same warp.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MESH_INPUT = 192
ROI_SCALE = 1.5

# The 5 alignment points, in the ArcFace template's order (image-left first for an upright,
# non-mirrored face = the subject's right first). Indices are MediaPipe's canonical face mesh.
# Eye centres: the mean of the 16-point eye-opening contour (corners 33/133 and 263/362 plus the
# lids) - the face_landmark model has no iris points, and this ring's centre sits on the pupil
# when the eye looks ahead, like the hand-labelled eye centres of wild5 and the ArcFace template.
RIGHT_EYE_RING = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
LEFT_EYE_RING = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
# Nose: the mean of 1 (the 3D tip) and 4 (just above it). Annotators click the visible tip, which
# in a 2D photo lies between the two; chosen on the lfw_5590 half of wild5 (nose error /
# inter-ocular: 1 -> 0.089, 4 -> 0.068, mean -> 0.062) and checked on the net_7876 half.
NOSE_TIP = (1, 4)
MOUTH_RIGHT = 61       # outer lip corners (78 / 308 are the inner corners)
MOUTH_LEFT = 291
EYE_CORNERS = (33, 263)  # the subject's right eye outer corner -> left eye outer corner


def alignment_points(mesh: np.ndarray) -> np.ndarray:
    """(468, 2|3) mesh -> (5, 2): right eye centre, left eye centre, nose tip, right and left
    mouth corners (the subject's right = image left)."""
    mesh = np.asarray(mesh)[:, :2]
    return np.stack([mesh[RIGHT_EYE_RING].mean(0), mesh[LEFT_EYE_RING].mean(0),
                     mesh[list(NOSE_TIP)].mean(0),
                     mesh[MOUTH_RIGHT], mesh[MOUTH_LEFT]]).astype(np.float64)


@dataclass
class Roi:
    centre: np.ndarray  # (2,) pixels
    size: float         # side of the square, pixels
    angle: float        # radians; the ROI's x axis points along (cos, sin) in the image

    def crop_to_image(self, out_size: int = MESH_INPUT) -> np.ndarray:
        """2x3 matrix taking crop pixel (u, v) in [0, out_size) to the image point it shows."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        rotation = np.array([[c, -s], [s, c]]) * (self.size / out_size)
        shift = self.centre - rotation @ np.array([out_size / 2, out_size / 2])
        return np.hstack([rotation, shift[:, None]])


def _level_angle(start: np.ndarray, end: np.ndarray) -> float:
    """MediaPipe's rotation: the angle that turns the start->end vector to horizontal."""
    return float(np.arctan2(end[1] - start[1], end[0] - start[0]))


def roi_from_detection(box: np.ndarray, keypoints: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    x0, y0, x1, y1 = box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return Roi(centre, max(x1 - x0, y1 - y0) * scale, _level_angle(keypoints[0], keypoints[1]))


def roi_from_mesh(mesh: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """The tracking ROI: the mesh's bounding box, levelled on the outer eye corners."""
    points = np.asarray(mesh)[:, :2]
    low, high = points.min(0), points.max(0)
    angle = _level_angle(points[EYE_CORNERS[0]], points[EYE_CORNERS[1]])
    return Roi((low + high) / 2, float((high - low).max()) * scale, angle)


class FaceMesh:
    """`mesh(image_rgb, roi)` -> ((468, 3) points in image pixels, face-presence probability)."""

    def __init__(self, model_folder=None, num_threads: int = 2):
        from lafs_edge.landmarks.fetch import model_path
        from lafs_edge.landmarks.litert import load_interpreter

        self.interpreter = load_interpreter(model_path("face_landmark.tflite", model_folder),
                                            num_threads)
        self._input = self.interpreter.get_input_details()[0]["index"]
        outputs = sorted(self.interpreter.get_output_details(), key=lambda d: -d["shape"][-1])
        self._points, self._presence = outputs[0]["index"], outputs[1]["index"]

    def crop(self, image: np.ndarray, roi: Roi) -> np.ndarray:
        """The 192x192 network input for `roi` (edge pixels replicated, as MediaPipe does)."""
        import cv2

        return cv2.warpAffine(image, roi.crop_to_image(), (MESH_INPUT, MESH_INPUT),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def __call__(self, image: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        tensor = self.crop(image, roi).astype(np.float32) / 255.0
        self.interpreter.set_tensor(self._input, tensor[None])
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._points).reshape(-1, 3).astype(np.float64)
        logit = float(self.interpreter.get_tensor(self._presence).ravel()[0])
        matrix = roi.crop_to_image()
        points = np.empty_like(raw)
        points[:, :2] = raw[:, :2] @ matrix[:, :2].T + matrix[:, 2]
        points[:, 2] = raw[:, 2] * roi.size / MESH_INPUT
        return points, float(1.0 / (1.0 + np.exp(-logit)))
