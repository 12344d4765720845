"""Issue 24 (hardening round 2), items 11-14: Ctrl-C is "interrupted" and exit 130 from the first
instruction, errors are sentences, printed names cannot forge lines, and failed runs leave no
empty folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from testkit import one_error_line

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


# --- 11. Ctrl-C from the first instruction ----------------------------------------------------------

@pytest.fixture(scope="module")
def console_script(tmp_path_factory) -> Path:
    """What `pip install` writes as bin/lafs-edge."""
    script = tmp_path_factory.mktemp("bin") / "lafs-edge"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom lafs_edge.cli import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("delay", [0.15, 0.4, 0.8, 1.5])
def test_ctrl_c_at_any_moment_is_interrupted_and_exit_130(console_script, tmp_path, delay):
    from lafs_edge.gallery import Gallery

    with Gallery(tmp_path / "g.db"):
        pass
    process = subprocess.Popen([str(console_script), "enroll", "ann", str(tmp_path / "none.jpg"),
                                "--gallery", str(tmp_path / "g.db")], env=child_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if "error:" in err and process.returncode in (2, -signal.SIGINT):
        # The command had answered before the signal; a SIGINT that lands during interpreter
        # shutdown (Python has put back the default handler) ends it as a shell's 130 too.
        pytest.skip("the command finished before the signal (a fast machine)")
    assert process.returncode == 130, err
    # the last line; a first run may say before it that it exports the student into the cache
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err


def test_a_missing_runtime_is_told_apart_from_a_broken_one():
    from lafs_edge.errors import UserError
    from lafs_edge.runtime.backends import require

    with pytest.raises(UserError, match="pip install"):
        require("no_such_runtime_package", "imaginary")


def test_an_interrupted_training_does_not_exit_0(cli, monkeypatch, tmp_path):
    """The trainer stops after a checkpoint on Ctrl-C and returns normally; the command must
    not then report success."""
    import importlib

    from lafs_edge.commands import train_common

    stopped = SimpleNamespace(losses=[1.0], start_step=0, final_step=7, total_steps=100,
                              images_per_s=1.0, output_dir=tmp_path)
    real = importlib.import_module

    def fake_import(name, *args):
        if name.startswith("lafs_edge.train.") and name.rsplit(".", 1)[1] in ("supervised", "lafs"):
            return SimpleNamespace(train=lambda cfg: stopped)
        return real(name, *args)

    monkeypatch.setattr(train_common.importlib, "import_module", fake_import)
    code, out, err = cli("train", "supervised")
    assert code == 130
    assert "interrupted at step 7" in err and "trained steps 0 -> 7" in out
    stopped.final_step = 100
    assert cli("train", "supervised")[0] == 0


# --- 12. errors in words -----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("eval", "--model", "m.pt", "--data", ".", "--max-genuine", "-1"),
    ("export", "m.pt", "--target", "onnx", "--pairs-count", "-1"),
    ("verify", "artifact", "--data", ".", "--limit", "-3"),
])
def test_negative_counts_are_refused_by_the_parser(cli, args):
    code, _, err = cli(*args)
    assert code == 2
    one_error_line(err, "must be an integer in")


def test_a_checkpoint_of_the_wrong_shape_is_one_sentence(cli, tmp_path):
    import torch

    from lafs_edge.models import create_model, save_checkpoint
    from lafs_edge.models.registry import read_checkpoint

    path = tmp_path / "m.pt"
    save_checkpoint(create_model("part_fvit_tiny", preset="test"), path)
    payload = read_checkpoint(path)
    name = next(k for k, v in payload["state_dict"].items() if v.ndim == 2)
    payload["state_dict"][name] = torch.zeros(3, 3)
    torch.save(payload, path)
    code, _, err = cli("export", path, "--target", "pytorch", "--out", tmp_path / "out")
    assert code == 2
    line = one_error_line(err, "weights do not fit part_fvit_tiny", "size mismatch")
    assert "RuntimeError" not in line


def test_a_deeply_nested_yaml_is_one_sentence(cli, tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("optim: " + "[" * 20000 + "]" * 20000 + "\n")
    code, _, err = cli("train", "supervised", "--config", deep, "--print-config")
    assert code == 2
    line = one_error_line(err)
    assert "RecursionError" not in line and "nested too deeply" in line, line


def test_a_closed_pipe_is_not_an_error(tmp_path):
    """`lafs-edge gallery list | head -1`: the reader leaving is not a failure to report."""
    from lafs_edge.gallery import Gallery
    from lafs_edge.gallery.transfer import ExportFile, ImportedPerson, ImportedShot

    vector = np.zeros(8, np.float32)
    vector[0] = 1
    people = [ImportedPerson(f"person-{n:05d}", [ImportedShot(vector)]) for n in range(3000)]
    with Gallery(tmp_path / "g.db") as gallery:
        gallery.merge(ExportFile("f" * 64, "m", 8, people))
    process = subprocess.Popen([sys.executable, "-m", "lafs_edge.cli", "gallery", "list",
                                "--gallery", str(tmp_path / "g.db")], env=child_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()
    err = process.stderr.read().decode()
    process.wait(timeout=60)
    assert err == "" and process.returncode == 141, err


# --- 13. names and file names cannot forge output lines ---------------------------------------------

def test_a_newline_in_a_file_name_cannot_forge_a_result_line(capsys):
    from lafs_edge.commands.identify import print_results
    from lafs_edge.gallery import Match

    face = SimpleNamespace(box=[1.0, 2.0, 30.0, 40.0])
    forged = "x.jpg face 1 0,0,9,9 obama 0.999\nreal"
    print_results(forged, [SimpleNamespace(face=face, match=Match("ann\u202e", 0.9, "ann"))])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["x.jpg face 1 0,0,9,9 obama 0.999\\x0areal face 1 1,2,30,40 ann\\u202e 0.900"]


# --- 14. a failed data pack leaves no empty folder -----------------------------------------------------

def test_a_failed_data_pack_removes_the_folder_it_made(cli, tmp_path):
    import cv2

    person = tmp_path / "src" / "alice"
    person.mkdir(parents=True)
    cv2.imwrite(str(person / "1.jpg"), np.full((112, 112, 3), 100, np.uint8))
    (person / "2.jpg").write_bytes(os.urandom(3000))   # fails after the writer started
    out = tmp_path / "packed"
    code, _, err = cli("data", "pack", tmp_path / "src", "--out", out, "--format", "webdataset")
    assert code == 2
    one_error_line(err, "not a readable image")
    assert not out.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    assert cli("data", "pack", tmp_path / "src", "--out", existing, "--format",
               "webdataset")[0] == 2
    assert existing.is_dir()   # a folder the user made stays
