"""Fetching MediaPipe's models: pinned hashes, offline failure with a clear message."""
from __future__ import annotations

import shutil

import pytest

from lafs_edge.cli import main
from lafs_edge.landmarks.fetch import MODELS, ModelsUnavailable, missing_models, model_path

pytestmark = pytest.mark.device


def test_corrupted_cached_model_is_noticed(mediapipe_models, tmp_path):
    for name in MODELS:
        shutil.copy(mediapipe_models / name, tmp_path / name)
    assert missing_models(tmp_path) == []
    with open(tmp_path / "face_landmark.tflite", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    assert missing_models(tmp_path) == ["face_landmark.tflite"]


def test_offline_fetch_fails_with_a_clear_message(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")   # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("LAFS_EDGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelsUnavailable, match="lafs-edge fetch-models"):
        model_path("face_landmark.tflite")
    assert "fetching them now" in caplog.text   # a warning: shown even without logging set up
    assert missing_models() == list(MODELS)


def test_wrong_wheel_is_refused(tmp_path, capsys):
    fake = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    fake.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    assert main(["fetch-models", "--cache", str(tmp_path / "cache"), "--wheel", str(fake)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sha256" in err[0]
    with pytest.raises(ValueError, match="unknown MediaPipe model"):
        model_path("face_detection_back.tflite")
