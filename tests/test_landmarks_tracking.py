"""Tracked frames skip detection: `FaceAnalyzer.analyze(image, rois)` runs the mesh on the given
ROIs only, and the demo loop's detector runs only on its re-detection frames."""
from __future__ import annotations

import numpy as np
import pytest

from lafs_edge.image import read_image
from lafs_edge.landmarks.mesh import roi_from_mesh

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def photo(shared_data):
    return read_image(shared_data / "photos" / "sample1.jpg")


def test_tracked_rois_skip_the_detector(face_analyzer, photo, monkeypatch):
    faces = face_analyzer.analyze(photo)
    assert len(faces) == 3
    rois = [roi_from_mesh(face.mesh) for face in faces]

    def no_detection(*args, **kwargs):
        raise AssertionError("the detector ran on a tracked frame")

    for detector in face_analyzer.detectors:
        monkeypatch.setattr(detector, "detect", no_detection)
    tracked = face_analyzer.analyze(photo, rois)
    assert len(tracked) == 3 and face_analyzer.timings.detect < 1.0
    for before, after in zip(sorted(faces, key=lambda f: f.box[0]), sorted(tracked, key=lambda f: f.box[0])):
        # the same three faces (a mesh from its own ROI moves a little: 15% of the eye distance
        # for the woman looking down)
        assert np.abs(before.points5 - after.points5).max() < 0.25 * before.size


def test_demo_loop_detects_only_on_redetection_frames(face_analyzer, photo, monkeypatch):
    """The demo's frame loop over a still scene: detection on frame 0 and every 5th frame after,
    the mesh on tracked ROIs in between (the embedder is a stub: only the loop is under test)."""
    from lafs_edge.apps.demo import Demo
    from lafs_edge.gallery import Recognizer

    class StubEmbedder:
        threshold, fingerprint, label = 0.5, "stub", "stub"
        timings = {"align": 0.0, "embed": 0.0}

        def embed(self, image, points5):
            return np.ones((len(points5), 4), np.float32) / 2

    calls = []
    for detector in face_analyzer.detectors:
        original = detector.detect
        monkeypatch.setattr(detector, "detect",
                            lambda image, *a, _original=original, **k: calls.append(1) or _original(image, *a, **k))
    demo = Demo(Recognizer(StubEmbedder(), face_analyzer), redetect_every=5)
    detected = []
    for i in range(11):
        before = len(calls)
        result = demo.process(photo, i / 30)
        if len(calls) > before:
            detected.append(i)
        assert len(result.faces) == 3
        assert (result.ms["detect"] > 0) == (i in detected)
    assert detected == [0, 5, 10]
