"""The headless demo on a short video assembled from real ORL photos: two people enrolled, a
third never enrolled. The event log must name the first two and call the third unknown; the
annotated video, the snapshot and the camera path's missing-GUI error are checked too."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lafs_edge.cli import main

pytestmark = pytest.mark.device

REPO = Path(__file__).resolve().parents[1]

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
    assert events[-1]["complete"] is True
    assert len(frames) == sum(len(r) for _, r in ranges)
    for who, frame_range in ranges:
        for number in frame_range:
            faces = frames[number]["faces"]
            assert len(faces) == 1, (number, faces)
            assert faces[0]["name"] == (who or "unknown"), (number, faces[0])
            assert faces[0]["known"] is (who is not None)
    for event in frames:   # every stage timed, one batch per frame; the rate achieved beside
        assert set(event["ms"]) >= {"detect", "mesh", "align", "embed", "match", "total"}
    # The rate needs two frames; after that it is measured, and no faster than the quickest
    # frame's pipeline allows (each frame's interval holds at least its own pipeline time).
    assert frames[0]["fps"] == 0
    fastest = 1e3 / min(e["ms"]["total"] for e in frames)
    assert all(0 < e["fps"] <= fastest * 1.01 + 0.01 for e in frames[1:]), [e["fps"] for e in frames]
    assert events[-1]["pipeline_fps"] > 0 and events[-1]["fps"] > 0
    assert sum(e["ms"]["detect"] == 0 for e in frames) > 0     # tracked frames skip detection
    assert "alice x6" in printed and "bob x6" in printed and "unknown x6" in printed
    written = cv2.VideoCapture(str(out))
    count = 0
    while written.read()[0]:
        count += 1
    assert count == len(frames)
    shot = cv2.imread(str(snapshot))
    # the figures sit in a band below the picture
    assert shot is not None and shot.shape[1] == FRAME[0] and shot.shape[0] > FRAME[1]


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


def test_missing_camera_is_one_quiet_line_before_the_model_loads(tmp_path, capfd):
    """No camera at index 9: one line, none of OpenCV's warnings (they bypass Python, hence
    capfd), and before the model: a model path that does not exist is never reached."""
    code = main(["demo", "--camera", "9", "--headless", "--log", str(tmp_path / "e.jsonl"),
                 "--model", str(tmp_path / "no-model"), "--gallery", str(tmp_path / "g.db")])
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: cannot open camera 9 (is a camera connected, and is this its index?)"]
    assert not (tmp_path / "e.jsonl").exists() and not (tmp_path / "g.db").exists()


@pytest.mark.parametrize("environ, message", [
    ({}, "DISPLAY is not set"),
    ({"DISPLAY": ":4242"}, "cannot connect to the display DISPLAY=:4242"),
    ({"DISPLAY": "unix:4242.0"}, "cannot connect"),
    ({"DISPLAY": ":4242", "QT_QPA_PLATFORM": "offscreen"}, None),   # Qt needs no display then
    ({"DISPLAY": "odd-name"}, None),                                  # not understood: Qt decides
])
def test_window_without_a_display_is_found_before_qt_aborts(environ, message):
    from lafs_edge.apps.demo import check_display
    from lafs_edge.errors import UserError

    if message is None:
        check_display(environ)
        return
    with pytest.raises(UserError, match=message) as error:
        check_display(environ)
    assert "--headless" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract unix sockets: Linux")
def test_a_listening_display_passes_the_check():
    """Something listening where DISPLAY=:4243 points (Linux's abstract X socket name)."""
    import socket

    from lafs_edge.apps.demo import check_display

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("\0/tmp/.X11-unix/X4243")
        server.listen(1)
        check_display({"DISPLAY": ":4243"})
        check_display({"DISPLAY": "unix:4243.0"})


def test_gui_build_is_read_from_the_build_information():
    """No window is opened to find out (it flashed open before the model load)."""
    from lafs_edge.apps.demo.window import _gui_backend

    assert _gui_backend("  Video I/O:\n  GUI:                           NONE\n") == "NONE"
    assert _gui_backend("  GUI:                           QT5\n    QT: YES") == "QT5"
    assert _gui_backend(cv2.getBuildInformation()) != "unknown"


def test_name_prompt_types_capitals_after_shift():
    """Qt's OpenCV sends Shift (X keysym 0xffe1) as a key, then the letter in lower case."""
    from lafs_edge.apps.demo.session import Prompt
    from lafs_edge.apps.demo.window import SHIFT

    prompt = Prompt("enroll")
    keys = [SHIFT[0], ord("c"), *map(ord, "arol "), SHIFT[1], ord("x"), ord("y"), 8]
    assert [prompt.feed(key) for key in keys] == [None] * len(keys)
    assert prompt.text == "Carol X"
    assert prompt.feed(0xFFE3) is None and prompt.text == "Carol X"     # Control: ignored
    assert prompt.feed(13) == "enter" and prompt.feed(0xFF1B) == "cancel"


def _fake_face(box):
    from types import SimpleNamespace

    x0, y0, x1, y1 = box
    mesh = np.array([[x0, y0, 0.0], [x1, y1, 0.0]])
    points5 = np.array([[x0 + (x1 - x0) * f, y0 + (y1 - y0) * g]
                        for f, g in ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))])
    return SimpleNamespace(mesh=mesh, points5=points5, size=x1 - x0)


@pytest.mark.parametrize("size", [(184, 224), (320, 240), (640, 480), (1280, 720)])
def test_labels_and_figures_never_cover_each_other(size):
    """A face at the very top-left and a long status: the figures and the status go in a band
    under the picture, the name label stays on the picture, no band row is wider than the frame,
    and rows are spaced by more than a text's height (the quickstart's 320 px frame overlapped)."""
    from lafs_edge.apps.demo import FaceResult, FrameResult, draw
    from lafs_edge.apps.demo.drawing import KNOWN, _font_scale, _text_size, wrap

    width, height = size
    rgb = np.full((height, width, 3), 90, np.uint8)
    face = FaceResult(1, _fake_face((0, 0, width // 2, height // 2)), "Carol X", 0.81, "Carol X")
    ms = {"detect": 12.3, "mesh": 3.4, "align": 0.5, "embed": 20.1, "match": 0.4, "total": 37.0}
    status = "this face does not match Carol X (cosine 0.02 < 0.43): y adds it, any other key cancels"
    canvas = draw(rgb, FrameResult(0, 0.0, [face], ms), status, "display 9.8 FPS", status_rows=2)
    picture, band = canvas[:height], canvas[height:]
    assert canvas.shape[1] == width and band.shape[0] > 0
    label = np.all(picture == KNOWN, axis=2)
    assert label[: height // 4].any()                          # the label is on the picture
    assert not np.all(band == KNOWN, axis=2).any()             # and nothing of it in the band
    scale = _font_scale(width)
    _, text_height, base = _text_size("Ag", scale)
    rows = (band.shape[0] - 4) // (text_height + base + 6)
    assert rows >= 4 and (band.shape[0] - 4) % (text_height + base + 6) == 0
    for row in wrap(status, width - 8, scale):
        assert _text_size(row, scale)[0] <= width - 8


def test_rate_meter_counts_frames_shown_and_skips_pauses():
    from lafs_edge.apps.demo.event_log import RateMeter

    meter = RateMeter(span=2.0)
    meter.tick(99.0)
    assert meter.text("display ") == "display -- FPS"      # one frame: no rate to show yet
    meter.pause()
    for number in range(11):
        meter.tick(100 + number * 0.1)
    assert meter.rate() == pytest.approx(10.0) and meter.text() == "10.0 FPS"
    meter.pause()                               # a name typed for 30 s
    for number in range(3):
        meter.tick(131 + number * 0.2)
    assert meter.rate() == pytest.approx(5.0) and meter.average() == pytest.approx(12 / 1.4)


def test_gui_extra_and_make_keep_one_opencv(tmp_path):
    """`pip install 'lafs-edge[gui]'` must not pull the headless build as well (both provide cv2,
    and pip check failed once one was swapped by hand), and `make` must keep a GUI build."""
    import subprocess
    import tomllib

    from lafs_edge.apps.demo.window import GUI_MISSING

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    opencv = lambda requirements: [r for r in requirements if r.startswith("opencv")]
    assert opencv(project["dependencies"]) == []
    extras = project["optional-dependencies"]
    assert opencv(extras["gui"]) == ["opencv-python>=4.9"]
    assert opencv(extras["headless"]) == ["opencv-python-headless>=4.9"]
    assert not any(opencv(extras[name]) for name in ("all", "train", "export", "test"))
    assert "lafs-edge[gui]" in GUI_MISSING
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    dry_run = lambda: subprocess.run(["make", "-n", "-B", "install", f"VENV={venv}"], cwd=REPO,
                                     capture_output=True, text=True, check=True).stdout
    assert '".[all,test,lint,headless]"' in dry_run()
    (site / "opencv_python-5.0.0.93.dist-info").mkdir()
    assert '".[all,test,lint,gui]"' in dry_run()


# --- what the window does, driven by scripted keys (no display needed) ---------------------------

class ScriptedWindow:
    """Stands in for apps/demo/window.Window: hands out scripted keys (an int, None for no key, or
    "close" for the window manager's close button) and records every status line drawn."""

    def __init__(self, keys, then=None):
        self.keys, self.then = list(keys), then
        self.is_closed, self.shown, self.shown_closed = False, 0, 0

    def show(self, bgr):
        self.shown += 1
        self.shown_closed += self.is_closed     # Qt would open the window again

    def key(self, wait_ms):
        key = self.keys.pop(0) if self.keys else self.then
        if key is KeyboardInterrupt:
            raise KeyboardInterrupt      # Ctrl+C in the terminal
        if key == "close":
            self.is_closed = True
            return None
        return key

    def paint(self):
        pass

    def closed(self):
        return self.is_closed

    def close(self):
        pass


def typed(text):
    """Keys as Qt's OpenCV delivers them: Shift, then the letter in lower case."""
    from lafs_edge.apps.demo.window import SHIFT

    keys = []
    for char in text:
        keys += [SHIFT[0], ord(char.lower())] if char.isupper() else [ord(char)]
    return keys


@pytest.fixture
def window_demo(shared_data, retail_0095, mediapipe_models, tmp_path):
    """A Demo on a gallery holding "bob" (ORL s2), and a 6-frame image folder of ORL s1."""
    from lafs_edge.apps.demo import Demo
    from lafs_edge.gallery import Gallery, Recognizer
    from lafs_edge.image import read_image, write_image
    from lafs_edge.runtime.embedder import Embedder

    orl = lambda person, photo: str(shared_data / "orl" / f"s{person}" / f"{photo}.pgm")
    assert main(["enroll", "bob", orl(2, 1), orl(2, 2), "--model", str(retail_0095["FP16"]),
                 "--gallery", str(tmp_path / "people.db")]) == 0
    frames = tmp_path / "frames"
    frames.mkdir()
    for number in range(6):
        rgb = cv2.resize(read_image(orl(1, 1 + number // 3)), FRAME)
        write_image(frames / f"{number:02d}.png", rgb)
    with Gallery(tmp_path / "people.db") as gallery:
        demo = Demo(Recognizer(Embedder.from_artifact(retail_0095["FP16"]), gallery=gallery))
        yield demo, frames


def _drawn_statuses(monkeypatch):
    import lafs_edge.apps.demo.session as module   # where the window session draws

    statuses, real_draw = [], module.draw
    monkeypatch.setattr(module, "draw", lambda rgb, result, status="", *args, **kw: (
        statuses.append(status), real_draw(rgb, result, status, *args, **kw))[1])
    return statuses


def test_window_keys_enroll_with_capitals_confirm_cancel_delete_close(window_demo, tmp_path,
                                                                       monkeypatch):
    """Enroll "Carol X" typed with Shift; cancel a prompt; enrolling the face under "bob" (a
    different person) asks first and n cancels; d is pre-filled with the face's new name;
    closing the window ends the run with the summary in the log."""
    from lafs_edge.apps.demo import Source, run_window

    demo, frames = window_demo
    statuses = _drawn_statuses(monkeypatch)
    keys = ([ord("e"), *typed("Carol X"), 13]
            + [ord("e"), *typed("abc"), 27]
            + [ord("e"), *typed("Bob"), 13, ord("n")]
            + [ord("d"), 13, "close"])
    log = tmp_path / "events.jsonl"
    summary = run_window(demo, Source(frames, fps=200), log=log, window=ScriptedWindow(keys))
    events = [json.loads(line) for line in log.read_text().splitlines()]
    actions = [e["message"] for e in events if e["event"] == "action"]
    assert actions[0] == "enrolled Carol X"      # no head retrained: off by default
    assert actions[1:] == ["enroll cancelled", "enroll cancelled", "deleted Carol X (1 shots)"]
    assert any(s.startswith("this face does not match bob (cosine") for s in statuses)
    assert "enrolling Carol X..." in statuses and "deleting Carol X..." in statuses
    assert "delete name: Carol X_  (Enter: ok, Esc: cancel)" in statuses   # pre-filled
    assert [p.name for p in demo.gallery.people()] == ["bob"]
    assert events[-1]["event"] == "summary" and events[-1] == {"event": "summary", **summary}
    assert 1 <= summary["frames"] <= 6   # keys are handled while the frames keep coming


def test_window_asks_before_enrolling_the_same_face_under_another_name(window_demo, tmp_path,
                                                                       monkeypatch):
    """Item 3 of issue 22 in the window: the face enrolled as "Carol X", then typed as "Dana",
    names the person it matches and asks; n cancels, y enrolls it anyway."""
    from lafs_edge.apps.demo import Source, run_window

    demo, frames = window_demo
    statuses = _drawn_statuses(monkeypatch)
    keys = ([ord("e"), *typed("Carol X"), 13, ord("e"), *typed("Dana"), 13, ord("n"),
             ord("e"), *typed("Dana"), 13, ord("y"), ord("q")])
    log = tmp_path / "events.jsonl"
    run_window(demo, Source(frames, fps=200), log=log, window=ScriptedWindow(keys))
    actions = [json.loads(line)["message"] for line in log.read_text().splitlines()
               if json.loads(line)["event"] == "action"]
    assert actions == ["enrolled Carol X", "enroll cancelled", "enrolled Dana"]
    assert any(s.startswith("this face matches Carol X (cosine") for s in statuses)
    assert sorted(p.name for p in demo.gallery.people()) == ["Carol X", "Dana", "bob"]


def test_window_confirmation_y_adds_to_the_existing_person(window_demo, tmp_path):
    from lafs_edge.apps.demo import Source, run_window

    demo, frames = window_demo
    keys = [ord("e"), *typed("BOB"), 13, ord("y"), ord("q")]     # "BOB" resolves to "bob"
    run_window(demo, Source(frames, fps=200), log=tmp_path / "e.jsonl", window=ScriptedWindow(keys))
    assert [(p.name, p.shots) for p in demo.gallery.people()] == [("bob", 3)]


def test_window_plays_files_at_their_rate_and_holds_the_last_frame(window_demo, tmp_path):
    """6 frames at 10 FPS take at least 0.5 s and the rate logged is 10, not the pipeline's;
    a key that is not a command is ignored while playing and quits once the last frame is held."""
    import time

    from lafs_edge.apps.demo import Source, run_window

    demo, frames = window_demo
    log = tmp_path / "events.jsonl"
    window = ScriptedWindow([], then=ord("x"))
    start = time.monotonic()
    summary = run_window(demo, Source(frames, fps=10), log=log, window=window)
    assert time.monotonic() - start >= 0.5
    assert summary["frames"] == 6 and summary["fps"] <= 10.5
    assert summary["pipeline_fps"] > 0
    frames_logged = [json.loads(line) for line in log.read_text().splitlines()][:-1]
    assert max(e["fps"] for e in frames_logged) <= 10.5


def test_window_single_image_waits_for_a_key(window_demo, tmp_path):
    from lafs_edge.apps.demo import Source, run_window

    demo, frames = window_demo
    window = ScriptedWindow([None] * 40, then=ord(" "))
    summary = run_window(demo, Source(frames / "00.png"), window=window)
    assert summary["frames"] == 1 and window.keys == []     # all 40 waits happened first


def test_window_closed_while_typing_ends_the_run_without_reopening(window_demo, tmp_path):
    from lafs_edge.apps.demo import Source, run_window

    demo, frames = window_demo
    window = ScriptedWindow([ord("e"), ord("a"), "close"])
    log = tmp_path / "e.jsonl"
    summary = run_window(demo, Source(frames, fps=200), log=log, window=window)
    assert window.shown_closed == 0 and summary["frames"] == 1
    assert [e["message"] for e in map(json.loads, log.read_text().splitlines())
            if e["event"] == "action"] == ["enroll cancelled"]
    assert [p.name for p in demo.gallery.people()] == ["bob"]


def test_window_ctrl_c_keeps_the_gallery_and_closes_the_log(window_demo, tmp_path):
    from lafs_edge.apps.demo import Source, run_window

    demo, frames = window_demo
    log = tmp_path / "e.jsonl"
    window = ScriptedWindow([ord("e"), *typed("Ann"), 13, None, KeyboardInterrupt])
    with pytest.raises(KeyboardInterrupt):        # the CLI turns it into exit 130
        run_window(demo, Source(frames, fps=200), log=log, window=window)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[-1]["event"] == "summary"
    assert events[-1]["complete"] is False   # issue 24 item 14: the partial log says so
    assert sorted(p.name for p in demo.gallery.people()) == ["Ann", "bob"]


@pytest.mark.parametrize("flag, value", [("--fps", "0"), ("--fps", "nan"), ("--fps", "inf"),
                                         ("--max-frames", "-1"), ("--max-frames", "0"),
                                         ("--redetect-every", "0"), ("--threshold", "1e308")])
def test_demo_numeric_flags_are_checked_before_anything_runs(flag, value, tmp_path, capsys):
    from lafs_edge.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["demo", "--source", str(tmp_path), "--headless", "--log", str(tmp_path / "e.jsonl"),
              "--gallery", str(tmp_path / "g.db"), flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]
    assert not (tmp_path / "e.jsonl").exists()
