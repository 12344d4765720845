"""The One Euro filter and the face tracker used for video."""
from __future__ import annotations

import numpy as np
import pytest

from lafs_edge.landmarks import FaceTracker, OneEuroFilter

pytestmark = pytest.mark.device


def test_still_point_jitter_is_reduced():
    rng = np.random.default_rng(0)
    truth = np.array([100.0, 50.0])
    raw = truth + rng.normal(0, 1.0, (300, 2))   # 1 px jitter on a 100 px face at 30 fps
    noise = np.std(raw[60:], axis=0).min()
    for beta, reduction in ((80.0, 0.8), (0.0, 0.2)):   # MediaPipe's speed term; pure low-pass
        smoother = OneEuroFilter(beta=beta)
        out = np.array([smoother(x, t / 30, scale=100) for t, x in enumerate(raw)])
        assert np.std(out[60:], axis=0).max() < reduction * noise
        assert np.abs(out[60:].mean(0) - truth).max() < 0.5


def test_moving_point_is_followed_with_little_lag():
    smoother = OneEuroFilter()
    times = np.arange(60) / 30
    path = np.stack([100 + 200 * times, 50 + 0 * times], axis=1)   # 2 face sizes per second
    out = np.array([smoother(p, t, scale=100) for t, p in zip(times, path)])
    lag = np.abs(out[30:, 0] - path[30:, 0]).max()
    slow = OneEuroFilter(beta=0.0)
    lagging = np.array([slow(p, t, scale=100) for t, p in zip(times, path)])
    assert lag < 5 and lag < 0.1 * np.abs(lagging[30:, 0] - path[30:, 0]).max()


def test_first_value_and_time_reset_pass_through():
    smoother = OneEuroFilter()
    np.testing.assert_array_equal(smoother(np.array([1.0, 2.0]), 0.0), [1.0, 2.0])
    np.testing.assert_array_equal(smoother(np.array([5.0, 6.0]), 0.0), [5.0, 6.0])   # same time


def test_tracker_keeps_ids_and_tracks_from_the_mesh(shared_data, face_analyzer):
    from lafs_edge.image import read_image

    image = read_image(shared_data / "photos" / "sample3.jpg")
    tracker = FaceTracker()
    first = tracker.update(face_analyzer.analyze(image), 0.0)
    assert sorted(track_id for track_id, _ in first) == [1, 2, 3]
    shifted = np.ascontiguousarray(np.roll(image, 6, axis=1))       # the camera moved 6 px
    faces = face_analyzer.analyze(shifted, rois=tracker.rois())      # no detection: tracking
    second = tracker.update(faces, 1 / 30)
    assert len(second) == 3
    before = {i: f.points5.mean(0) for i, f in first}
    for track_id, face in second:
        assert np.linalg.norm(face.points5.mean(0) - before[track_id] - [6, 0]) < 6
