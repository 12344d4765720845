"""BlazeFace face detection on LiteRT: SSD anchors, box/keypoint decoding and weighted NMS.

Written from MediaPipe's graph options (face_detection_short_range.pbtxt and
face_detection_full_range.pbtxt, calculators SsdAnchorsCalculator, TensorsToDetectionsCalculator
and NonMaxSuppressionCalculator): the TFLite files only hold the network, all of this is ours.

Coordinates: every detection is in pixels of the input image. Keypoints (6): the subject's right
eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion (for an upright,
non-mirrored face the subject's right eye is on the image's left).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectorConfig:
    model: str                     # file name in the model cache
    input_size: int
    strides: tuple[int, ...]       # one per SSD layer
    anchors_per_layer: int         # 2: aspect ratio 1 plus the interpolated scale
    min_score: float
    nms_iou: float = 0.3


# min_score: MediaPipe's default min_detection_confidence (0.5) for both models.
SHORT_RANGE = DetectorConfig("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2, 0.5)
FULL_RANGE = DetectorConfig("face_detection_full_range_sparse.tflite", 192, (4,), 1, 0.5)
NUM_KEYPOINTS = 6


@dataclass
class Detection:
    box: np.ndarray        # (4,) x0, y0, x1, y1 in pixels
    score: float
    keypoints: np.ndarray  # (6, 2) pixels


def ssd_anchors(input_size: int, strides: tuple[int, ...], anchors_per_layer: int) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], MediaPipe's order (layer group, y, x, anchor).

    Both BlazeFace models use fixed-size anchors (width = height = 1), so only the centres matter.
    Consecutive layers with the same stride share one feature map (their anchors interleave).
    """
    centres = []
    layer = 0
    while layer < len(strides):
        stride, count = strides[layer], 0
        while layer < len(strides) and strides[layer] == stride:
            count += anchors_per_layer
            layer += 1
        cells = int(np.ceil(input_size / stride))
        grid = (np.arange(cells) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(xy, count, axis=0))
    return np.concatenate(centres).astype(np.float32)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int,
           min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regressor output (N, 16) + logits (N,) -> boxes (M, 4) x0y0x1y1, scores (M,), keypoints
    (M, 6, 2), all in [0, 1] of the square network input, for scores >= min_score."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.astype(np.float64), -100.0, 100.0)))
    keep = scores >= min_score
    raw, anchors, scores = raw_boxes[keep] / input_size, anchors[keep], scores[keep]
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None]
    return boxes, scores, keypoints


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray,
                 iou_threshold: float) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's WEIGHTED suppression: the best box absorbs every box overlapping it by more
    than `iou_threshold`; the merged box and keypoints are their score-weighted mean, the score
    stays the best one. Averaging the many anchors that fire on a face steadies the output."""
    order = np.argsort(-scores, kind="stable")
    merged = []
    while order.size:
        best = order[0]
        overlap = iou(boxes[best], boxes[order]) > iou_threshold
        group, order = order[overlap], order[~overlap]
        weights = scores[group][:, None]
        total = weights.sum()
        box = (boxes[group] * weights).sum(0) / total
        points = (keypoints[group] * weights[:, :, None]).sum(0) / total
        merged.append((box, float(scores[best]), points))
    return merged


class BlazeFace:
    """One BlazeFace model; `detect(image_rgb)` -> detections in image pixels."""

    def __init__(self, config: DetectorConfig = SHORT_RANGE, model_folder=None, num_threads: int = 2):
        from lafs_edge.landmarks.fetch import model_path
        from lafs_edge.landmarks.litert import load_interpreter

        self.config = config
        self.interpreter = load_interpreter(model_path(config.model, model_folder), num_threads)
        self.anchors = ssd_anchors(config.input_size, config.strides, config.anchors_per_layer)
        inputs = self.interpreter.get_input_details()
        self._input = inputs[0]["index"]
        outputs = sorted(self.interpreter.get_output_details(), key=lambda d: -d["shape"][-1])
        self._boxes, self._scores = outputs[0]["index"], outputs[1]["index"]
        if outputs[0]["shape"][1] != len(self.anchors):
            raise ValueError(f"{config.model}: {outputs[0]['shape'][1]} boxes but "
                             f"{len(self.anchors)} anchors")

    def detect(self, image: np.ndarray, min_score: float | None = None) -> list[Detection]:
        """`image`: RGB uint8 (H, W, 3). The image is letterboxed (centred, zero padding) to a
        square so faces keep their shape, as MediaPipe does."""
        size = self.config.input_size
        tensor, scale, shift = letterbox(image, size)
        self.interpreter.set_tensor(self._input, tensor[None])
        self.interpreter.invoke()
        raw_boxes = self.interpreter.get_tensor(self._boxes)[0]
        raw_scores = self.interpreter.get_tensor(self._scores)[0, :, 0]
        threshold = self.config.min_score if min_score is None else min_score
        boxes, scores, keypoints = decode(raw_boxes, raw_scores, self.anchors,
                                          size, threshold)
        detections = []
        for box, score, points in weighted_nms(boxes, scores, keypoints, self.config.nms_iou):
            box = (box.reshape(2, 2) * size - shift) / scale
            detections.append(Detection(box=box.ravel(), score=score,
                                        keypoints=(points * size - shift) / scale))
        return detections


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 -> (size, size, 3) float32 in [-1, 1] with the image resized to fit and centred
    (zero padding), plus (scale (2,), shift (2,)) such that input pixel = image pixel * scale +
    shift."""
    import cv2

    height, width = image.shape[:2]
    ratio = size / max(height, width)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size, 3), np.uint8)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    tensor = canvas.astype(np.float32) / 127.5 - 1.0
    return tensor, np.array([new_w / width, new_h / height]), np.array([left, top], float)
