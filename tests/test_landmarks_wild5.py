"""The 5 alignment points against wild5's hand labels, and training/device crops being one path."""
from __future__ import annotations

import numpy as np
import pytest

from lafs_edge.align import align_face
from lafs_edge.image import read_image

pytestmark = pytest.mark.device

SAMPLE_EVERY = 50   # 153 of the 7,641 faces, spread over both halves (lfw_5590 and net_7876)
# Measured on this sample: mean 0.051 (docs/device.md has the full set). A wrong point order,
# nose or mouth index, or a broken ROI/projection gives > 0.15.
MEAN_ERROR_BOUND = 0.07


def _wild5_sample(shared_data):
    from lafs_edge.landmark_lists import canonical_order, read_landmark_list

    entries = read_landmark_list(shared_data / "wild5" / "landmarks.txt")
    return [(shared_data / "wild5" / rel, canonical_order(points)[0])
            for rel, points in entries[::SAMPLE_EVERY]]


def _nearest_face(faces, points):
    return min(faces, key=lambda f: np.linalg.norm(f.points5.mean(0) - points.mean(0)))


def test_five_point_error_on_wild5(shared_data, face_analyzer):
    errors, missed = [], 0
    for path, truth in _wild5_sample(shared_data):
        faces = face_analyzer.analyze(read_image(path))
        if not faces:
            missed += 1
            continue
        found = _nearest_face(faces, truth).points5
        inter_ocular = np.linalg.norm(truth[1] - truth[0])
        errors.append(np.linalg.norm(found - truth, axis=1).mean() / inter_ocular)
    assert missed == 0, f"{missed} wild5 faces not detected"
    assert np.mean(errors) < MEAN_ERROR_BOUND
    assert np.median(errors) < MEAN_ERROR_BOUND


def test_training_and_device_crops_are_identical(shared_data):
    """The training reader (LandmarkFaces) and the device's Embedder.align, given the same image
    and points, produce the very same 112x112 crop (both call lafs_edge.align.align_face)."""
    from lafs_edge.runtime.embedder import Embedder
    from lafs_edge.runtime.manifest import InputSpec, Manifest
    from lafs_edge.landmark_lists import LandmarkFaces

    training = LandmarkFaces(shared_data / "wild5" / "landmarks.txt", return_points=True)
    index = 123
    training_crop, points = training[index]
    path = training.entries[index][0]
    manifest = Manifest(name="part_fvit_tiny", target="onnx", model_file="model.onnx",
                        model_sha256="0" * 64, input=InputSpec(shape=[-1, 3, 112, 112]),
                        alignment={"template": None, "crop_size": [112, 112]}, embedding_dim=64)

    class AlignOnly:  # Embedder.align needs the manifest only; no model is run here
        pass

    runtime = AlignOnly()
    runtime.manifest = manifest
    device_crop = Embedder(runtime).align(read_image(path), [points])[0]
    assert training_crop.shape == device_crop.shape == (112, 112, 3)
    assert np.array_equal(training_crop, device_crop)


def test_detected_points_give_a_crop_close_to_the_labelled_one(shared_data, face_analyzer):
    path, truth = _wild5_sample(shared_data)[3]
    image = read_image(path)
    found = _nearest_face(face_analyzer.analyze(image), truth).points5
    labelled, detected = align_face(image, truth), align_face(image, found)
    difference = np.abs(labelled.astype(float) - detected.astype(float)).mean()
    assert difference < 20, f"mean absolute pixel difference {difference:.1f}"
    assert difference > 0 or np.allclose(found, truth)


def test_tight_aligned_crops_are_detected_without_padding(shared_data, face_analyzer):
    """Faces filling the frame (112x112 ArcFace crops) are still found: no padding is needed."""
    for path, truth in _wild5_sample(shared_data)[:20]:
        crop = align_face(read_image(path), truth)
        assert len(face_analyzer.analyze(crop)) >= 1
