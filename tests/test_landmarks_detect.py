"""BlazeFace decoding and the detection + mesh pipeline on real photos."""
from __future__ import annotations

import numpy as np
import pytest

from lafs_edge.landmarks.blazeface import (FULL_RANGE, SHORT_RANGE, decode, letterbox, ssd_anchors,
                                           weighted_nms)
from lafs_edge.landmarks.mesh import Roi, roi_from_detection

pytestmark = pytest.mark.device

# Counted by looking at the photos: sample1 three women (one looking down), sample2 three
# (the left one in three-quarter profile, the middle one looking down), sample3 three.
PHOTO_FACES = {"astronaut.png": 1, "sample1.jpg": 3, "sample2.jpg": 3, "sample3.jpg": 3}


def test_ssd_anchors_match_mediapipe_layout():
    short = ssd_anchors(SHORT_RANGE.input_size, SHORT_RANGE.strides, SHORT_RANGE.anchors_per_layer)
    full = ssd_anchors(FULL_RANGE.input_size, FULL_RANGE.strides, FULL_RANGE.anchors_per_layer)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # 16x16 cells x 2 anchors, then 8x8 cells x 6 anchors (three stride-16 layers share a map)
    np.testing.assert_allclose(short[0], short[1])
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[512:518], np.tile([0.5 / 8, 0.5 / 8], (6, 1)))
    np.testing.assert_allclose(short[-1], [7.5 / 8, 7.5 / 8])
    np.testing.assert_allclose(full[48], [0.5 / 48, 1.5 / 48])


def test_decode_offsets_are_relative_to_anchor():
    anchors = np.array([[0.25, 0.5], [0.75, 0.75]], np.float32)
    raw = np.zeros((2, 16), np.float32)
    raw[0, :4] = [12.8, -6.4, 32, 64]        # in input pixels (128)
    raw[0, 4:6] = [-12.8, 0]                 # first keypoint 0.1 left of the anchor
    boxes, scores, keypoints = decode(raw, np.array([3.0, -3.0]), anchors, 128, 0.5)
    assert len(boxes) == 1 and scores[0] == pytest.approx(1 / (1 + np.exp(-3)))
    np.testing.assert_allclose(boxes[0], [0.35 - 0.125, 0.45 - 0.25, 0.35 + 0.125, 0.45 + 0.25],
                               atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 0], [0.15, 0.5], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 1], [0.25, 0.5], atol=1e-6)


def test_weighted_nms_averages_overlapping_boxes_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.6, 0.7])
    keypoints = np.stack([boxes[:, :2].reshape(3, 1, 2).repeat(6, 1)])[0]
    merged = weighted_nms(boxes, scores, keypoints, 0.3)
    assert len(merged) == 2
    box, score, points = merged[0]
    assert score == 0.9                      # the best score is kept, not averaged
    np.testing.assert_allclose(box, (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5)
    np.testing.assert_allclose(points[0], [0.6 / 1.5, 0.6 / 1.5])
    np.testing.assert_allclose(merged[1][0], boxes[2])


def test_letterbox_maps_image_pixels_to_network_input():
    image = np.zeros((60, 120, 3), np.uint8)
    image[10:20, 30:40] = 255                # a white square at x 30-40, y 10-20
    tensor, scale, shift = letterbox(image, 128)
    assert tensor.shape == (128, 128, 3) and tensor.min() == -1.0
    white = np.argwhere(tensor[:, :, 0] > 0.9)
    top_left = np.array([30, 10]) * scale + shift
    np.testing.assert_allclose(white.min(0)[::-1], top_left, atol=1.0)


def test_roi_is_levelled_on_the_eyes():
    keypoints = np.zeros((6, 2))
    keypoints[0], keypoints[1] = [10, 10], [20, 20]   # right eye -> left eye going down 45 deg
    roi = roi_from_detection(np.array([0, 0, 40, 20]), keypoints)
    assert roi.angle == pytest.approx(np.pi / 4) and roi.size == pytest.approx(60)
    matrix = Roi(np.array([100.0, 50.0]), 192.0, 0.0).crop_to_image()
    np.testing.assert_allclose(matrix @ [96, 96, 1], [100, 50])


@pytest.mark.parametrize("name", sorted(PHOTO_FACES))
def test_face_count_on_photos(shared_data, face_analyzer, name):
    from lafs_edge.image import read_image

    image = read_image(shared_data / "photos" / name)
    faces = face_analyzer.analyze(image)
    assert len(faces) == PHOTO_FACES[name]
    for face in faces:
        x0, y0, x1, y1 = face.box
        margin = 0.25 * (x1 - x0)
        inside = ((face.points5[:, 0] > x0 - margin) & (face.points5[:, 0] < x1 + margin)
                  & (face.points5[:, 1] > y0 - margin) & (face.points5[:, 1] < y1 + margin))
        assert inside.all() and face.presence > 0.5
        # anatomical order: the subject's right eye/mouth corner lie on the image left of the
        # left ones along the eye line, for upright faces
        eye_line = face.points5[1] - face.points5[0]
        assert np.dot(face.points5[4] - face.points5[3], eye_line) > 0


def test_points_follow_a_rotated_photo(shared_data, face_analyzer):
    """Rotating the photo 30 degrees moves the 5 points with it: checks the ROI rotation and the
    projection of the mesh back to image coordinates."""
    import cv2

    from lafs_edge.image import read_image

    image = read_image(shared_data / "photos" / "astronaut.png")
    reference = face_analyzer.analyze(image)[0].points5
    matrix = cv2.getRotationMatrix2D((256, 256), 30, 1.0)
    rotated = cv2.warpAffine(image, matrix, (512, 512))
    faces = face_analyzer.analyze(rotated)
    assert len(faces) == 1
    expected = reference @ matrix[:, :2].T + matrix[:, 2]
    eye_distance = np.linalg.norm(reference[1] - reference[0])
    assert np.linalg.norm(faces[0].points5 - expected, axis=1).max() < 0.12 * eye_distance


def test_mirrored_photo_keeps_template_order(shared_data, face_analyzer):
    from lafs_edge.image import read_image

    image = read_image(shared_data / "photos" / "astronaut.png")
    points = face_analyzer.analyze(image)[0].points5
    mirrored = face_analyzer.analyze(np.ascontiguousarray(image[:, ::-1]))[0].points5
    expected = points[[1, 0, 2, 4, 3]] * [-1, 1] + [image.shape[1] - 1, 0]
    eye_distance = np.linalg.norm(points[1] - points[0])
    assert np.linalg.norm(mirrored - expected, axis=1).max() < 0.1 * eye_distance


def test_no_face_and_bad_arrays(shared_data, face_analyzer):
    from lafs_edge.image import read_image

    wall = read_image(shared_data / "photos" / "sample1.jpg")[0:300, 0:250]  # a bare wall
    assert face_analyzer.analyze(wall) == []
    with pytest.raises(ValueError, match="uint8"):
        face_analyzer.analyze(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        face_analyzer.analyze(np.zeros((64, 64, 4), np.uint8))
