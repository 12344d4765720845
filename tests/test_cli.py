"""The `lafs-edge` command: help on every sub-command, models, embed, and its error paths."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lafs_edge.cli import COMMANDS, build_parser, main
from lafs_edge.image import write_image

pytestmark = pytest.mark.cli


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lafs_edge.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*name.split(), "--help"])
    assert exit_info.value.code == 0
    assert "usage: lafs-edge" in capsys.readouterr().out


def test_console_script_is_declared():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["lafs-edge"] == "lafs_edge.cli:main"
    build_parser()  # every sub-command module imports and configures


def test_models_lists_every_preset(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ["part_fvit_base", "part_fvit_small", "part_fvit_tiny", "mobilefacenet"]:
        assert name in out


@pytest.fixture
def faces(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"face{i}.png"
        write_image(path, rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


def test_embed_writes_unit_vectors(faces, tmp_path):
    out = tmp_path / "emb.npy"
    assert main(["embed", *faces, "--model", "part_fvit_tiny", "--out", str(out)]) == 0
    emb = np.load(out)
    assert emb.shape == (3, 192)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_embed_real_face_from_shared_data(shared_data, tmp_path):
    """An ORL face (92x112, grey) must be aligned first: the command says so."""
    result = run_cli("embed", str(shared_data / "orl/s1/1.pgm"), "--model", "mobilefacenet",
                     "--out", str(tmp_path / "e.npy"))
    assert result.returncode == 2
    assert "expected an aligned 112x112 face, got 92x112" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("problem", ["missing", "not an image", "wrong size", "bad model",
                                     "bad checkpoint"])
def test_embed_bad_input_is_one_line(problem, faces, tmp_path):
    image, model = faces[0], "part_fvit_tiny"
    if problem == "missing":
        image = str(tmp_path / "nope.jpg")
    elif problem == "not an image":
        image = str(tmp_path / "text.jpg")
        (tmp_path / "text.jpg").write_text("hello")
    elif problem == "wrong size":
        image = str(tmp_path / "small.png")
        write_image(image, np.zeros((50, 60, 3), np.uint8))
    elif problem == "bad model":
        model = "no_such_model"
    elif problem == "bad checkpoint":
        model = str(tmp_path / "broken.pt")
        (tmp_path / "broken.pt").write_bytes(b"\x00" * 10)
    out = tmp_path / "out.npy"
    result = run_cli("embed", image, "--model", model, "--out", str(out))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not out.exists()


def test_missing_opencv_is_one_line_naming_the_extras(monkeypatch, tmp_path, capsys):
    """Neither OpenCV build is a base dependency: without one, a command that needs cv2 says
    which extra to install instead of raising ModuleNotFoundError."""
    import sys

    from lafs_edge.cli import main

    monkeypatch.setitem(sys.modules, "cv2", None)   # import cv2 -> ModuleNotFoundError
    photo = tmp_path / "x.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert main(["embed", str(photo), "--model", "mobilefacenet", "--out",
                 str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'lafs-edge[headless]'" in err[0]
