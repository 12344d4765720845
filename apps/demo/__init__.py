"""The live demo: faces in a camera, a video or a folder of images, named from a gallery.

Per frame: mesh on the tracked faces' ROIs (BlazeFace detection every `redetect_every` frames or
when nothing is tracked), One Euro smoothing of the landmarks per track, alignment and ONE
embedder batch for every face of the frame, gallery match (through the on-device adapter when
the gallery holds one). Drawn: boxes and names on the frame; below it, in a band of its own, the
frame rate actually achieved, the pipeline's milliseconds per stage and the status line.

    lafs-edge demo --camera 0 --model ARTIFACT --gallery people.db          # window + keys
    lafs-edge demo --source clip.mp4|frames/ --headless --out annotated.mp4 --log events.jsonl

Window keys: e = enroll the largest face under a typed name (Enter saves, Esc cancels; a name
already in the gallery whose faces do not match asks for y first), a = adapt (train the
on-device head), d = delete a person (typed; pre-filled with the face's name), q or Esc = quit;
closing the window quits too. Files play at their frame rate; the last frame stays until a key.
The window needs OpenCV's GUI build (`pip install 'lafs-edge[gui]'`, see docs/demo.md).

The rooms: capture.py (frames in, annotated video out), loop.py (Demo: the per-frame pipeline
and the gallery actions; run_headless), drawing.py (labels, the band, the key line), window.py
(the OpenCV window, its checks and keys), session.py (what the keys do; run_window) and
event_log.py (the event log and the run's summary).
"""
from lafs_edge.apps.demo.capture import Source, check_source
from lafs_edge.apps.demo.drawing import draw
from lafs_edge.apps.demo.event_log import Recorder
from lafs_edge.apps.demo.loop import Demo, FaceResult, FrameResult, run_headless
from lafs_edge.apps.demo.session import run_window
from lafs_edge.apps.demo.window import check_display, require_gui

__all__ = ["Demo", "FaceResult", "FrameResult", "Recorder", "Source", "check_display",
           "check_source", "draw", "require_gui", "run_headless", "run_window"]
