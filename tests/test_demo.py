"""The headless demo on a short video assembled from real ORL photos: two people enrolled, a
third never enrolled. The event log must name the first two and call the third unknown; the
annotated video, the snapshot and the camera path's missing-GUI error are checked too."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lafs_edge.cli import main

FRAME = (184, 224)          # ORL's 92x112, twice the size (BlazeFace wants some margin)
SCENES = [("alice", 1, [7, 8]), ("bob", 2, [8, 9]), (None, 5, [1, 2])]   # (who, ORL person, photos)
REPEAT = 3                  # frames per photo, so tracking and smoothing run between detections


@pytest.fixture(scope="module")
def video(shared_data, tmp_path_factory):
    """An .avi of the scenes above, and the frame range of each scene."""
    from lafs_edge.image import read_image

    path = tmp_path_factory.mktemp("demo") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, FRAME)
    assert writer.isOpened()
    ranges, number = [], 0
    for who, person, photos in SCENES:
        start = number
        for photo in photos:
            rgb = read_image(shared_data / "orl" / f"s{person}" / f"{photo}.pgm")
            frame = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), FRAME)
            for _ in range(REPEAT):
                writer.write(frame)
                number += 1
        ranges.append((who, range(start, number)))
    writer.release()
    return path, ranges


@pytest.fixture(scope="module")
def gallery(shared_data, retail_0095, mediapipe_models, tmp_path_factory):
    path = tmp_path_factory.mktemp("demo-gallery") / "people.db"
    orl = lambda person, photo: str(shared_data / "orl" / f"s{person}" / f"{photo}.pgm")
    for name, person in (("alice", 1), ("bob", 2)):
        assert main(["enroll", name, orl(person, 1), orl(person, 2), orl(person, 3),
                     "--model", str(retail_0095["FP16"]), "--gallery", str(path)]) == 0
    return path


def test_headless_demo_names_people_and_marks_stranger(video, gallery, retail_0095, tmp_path,
                                                        capsys):
    clip, ranges = video
    out, log, snapshot = tmp_path / "annotated.mp4", tmp_path / "events.jsonl", tmp_path / "shot.png"
    code = main(["demo", "--source", str(clip), "--headless", "--out", str(out), "--log", str(log),
                 "--snapshot", str(snapshot), "--model", str(retail_0095["FP16"]),
                 "--gallery", str(gallery), "--redetect-every", "4"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    events = [json.loads(line) for line in log.read_text().splitlines()]
    frames = [e for e in events if e["event"] == "frame"]
    assert events[-1]["event"] == "summary" and events[-1]["frames"] == len(frames)
    assert len(frames) == sum(len(r) for _, r in ranges)
    for who, frame_range in ranges:
        for number in frame_range:
            faces = frames[number]["faces"]
            assert len(faces) == 1, (number, faces)
            assert faces[0]["name"] == (who or "unknown"), (number, faces[0])
            assert faces[0]["known"] is (who is not None)
    for event in frames:   # every stage timed, one batch per frame
        assert set(event["ms"]) >= {"detect", "mesh", "align", "embed", "match", "total", "fps"}
    assert sum(e["ms"]["detect"] == 0 for e in frames) > 0     # tracked frames skip detection
    assert "alice x6" in printed and "bob x6" in printed and "unknown x6" in printed
    written = cv2.VideoCapture(str(out))
    count = 0
    while written.read()[0]:
        count += 1
    assert count == len(frames)
    shot = cv2.imread(str(snapshot))
    assert shot is not None and shot.shape[:2] == (FRAME[1], FRAME[0])


def test_landmarks_are_smoothed_across_frames(shared_data, retail_0095, mediapipe_models):
    """A still face repeated with pixel noise: the tracked (smoothed) 5 points move less from
    frame to frame than the per-frame detections do."""
    from lafs_edge.apps.demo import Demo
    from lafs_edge.gallery import Recognizer
    from lafs_edge.image import read_image
    from lafs_edge.landmarks import FaceAnalyzer
    from lafs_edge.runtime.embedder import Embedder

    image = cv2.resize(read_image(shared_data / "orl" / "s3" / "1.pgm"), FRAME)
    rng = np.random.default_rng(0)
    noisy = [np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
             for _ in range(8)]
    recognizer = Recognizer(Embedder.from_artifact(retail_0095["FP16"]), FaceAnalyzer())
    demo = Demo(recognizer, redetect_every=1)      # detection every frame: only smoothing differs
    smoothed = [demo.process(frame, t / 10).faces[0].face.points5.copy()
                for t, frame in enumerate(noisy)]
    raw = [recognizer.faces(frame)[0].points5 for frame in noisy]
    jitter = lambda points: float(np.mean(np.abs(np.diff(np.stack(points), axis=0))))
    assert jitter(smoothed) < 0.7 * jitter(raw)


def test_demo_errors_are_one_line(retail_0095, tmp_path, capsys):
    model = str(retail_0095["FP16"])
    assert main(["demo", "--camera", "0", "--model", model, "--gallery", str(tmp_path / "g.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "opencv-python" in err[0] and "--headless" in err[0]
    assert main(["demo", "--source", str(tmp_path / "missing.mp4"), "--headless", "--log",
                 str(tmp_path / "e.jsonl"), "--model", model, "--gallery", str(tmp_path / "g.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such video" in err[0]
    assert main(["demo", "--source", str(tmp_path), "--headless", "--model", model,
                 "--gallery", str(tmp_path / "g.db")]) == 2
    assert "--headless needs" in capsys.readouterr().err


def test_window_actions_enroll_adapt_delete(shared_data, retail_0095, mediapipe_models, tmp_path):
    """What the window's keys do, without a window: enroll the face in view under a name (the
    adapter is retrained once two people are known), then delete that person."""
    from lafs_edge.apps.demo import Demo
    from lafs_edge.gallery import Gallery, Recognizer
    from lafs_edge.image import read_image
    from lafs_edge.runtime.embedder import Embedder

    frame = lambda person, photo: cv2.resize(
        read_image(shared_data / "orl" / f"s{person}" / f"{photo}.pgm"), FRAME)
    embedder = Embedder.from_artifact(retail_0095["FP16"])
    with Gallery(tmp_path / "people.db") as gallery:
        demo = Demo(Recognizer(embedder, gallery=gallery))
        first = frame(1, 1)
        assert demo.enroll(first, demo.process(first, 0.0), "alice") == "enrolled alice"
        assert demo.process(frame(1, 6), 0.1).faces[0].name == "alice"
        second = frame(2, 1)
        message = demo.enroll(second, demo.process(second, 0.2), "bob")
        assert message.startswith("enrolled bob; adapted 2 people")
        assert gallery.adapter(embedder.fingerprint) is not None
        assert demo.process(frame(2, 7), 0.3).faces[0].name == "bob"
        assert demo.delete("bob").startswith("deleted bob (1 shots)")
        assert [p.name for p in gallery.people()] == ["alice"]
        assert demo.process(frame(2, 7), 0.4).faces[0].name is None
