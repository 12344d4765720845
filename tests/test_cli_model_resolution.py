"""One command line: `--model` takes an artifact folder, a checkpoint or a model name with shipped
weights in every command, told apart by what the value is (lafs_edge/commands/model_option.py);
export spells architecture overrides as training does; every error is one line, with the
traceback under LAFS_EDGE_DEBUG=1; library modules log, and the command shows it on stderr."""
from __future__ import annotations

import errno
import json
import logging

import numpy as np
import pytest
import torch

import lafs_edge.commands.models as models_command
from lafs_edge.cli import main
from lafs_edge.commands.model_option import ModelSource, resolve_model
from lafs_edge.errors import UserError
from lafs_edge.hashing import sha256_file
from lafs_edge.image import write_image
from lafs_edge.models import create_model, save_checkpoint
from lafs_edge.models.pretrained import WEIGHTS, shipped
from testkit import one_error_line

pytestmark = pytest.mark.cli

TRAINED = min(shipped())
DEBUG_HINT = " (set LAFS_EDGE_DEBUG=1 for the traceback)"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(create_model("part_fvit_tiny", preset="test"), path)
    return path


@pytest.fixture()
def manifest_only(tmp_path):
    """A folder that looks like an artifact (resolution reads nothing inside)."""
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    return folder


# --- telling the kinds apart ---------------------------------------------------------------------

def test_each_kind_is_told_from_what_it_is(checkpoint, manifest_only):
    assert resolve_model(TRAINED) == ModelSource("checkpoint", WEIGHTS / shipped()[TRAINED]["file"])
    assert resolve_model(str(checkpoint)) == ModelSource("checkpoint", checkpoint)
    assert resolve_model(str(manifest_only)) == ModelSource("artifact", manifest_only)
    assert resolve_model(str(manifest_only / "manifest.json")) == ModelSource("artifact",
                                                                               manifest_only)
    with pytest.raises(UserError, match="an exported artifact; this command compares"):
        resolve_model(str(manifest_only), pytorch_only=True)


def test_a_name_goes_the_way_of_the_default_student(monkeypatch):
    """Device commands export a name's shipped checkpoint through the same cache as no --model."""
    import lafs_edge.commands.artifacts as shipped_module

    monkeypatch.setattr(shipped_module, "checkpoint_artifact", lambda path: ("exported", path))
    assert resolve_model(TRAINED).artifact() == shipped_module.default_artifact(TRAINED) == (
        "exported", WEIGHTS / shipped()[TRAINED]["file"])


BAD_VALUES = {   # kind of bad value -> (value, what the message says)
    "nothing there": ("no_such_model", "not "),
    "name without weights": ("part_fvit_base", "has no shipped weights"),
    "folder without manifest": ("FOLDER", "a folder without manifest.json"),
}
COMMANDS = {   # what each command needs around --model; every one resolves it before reading
    "embed": ["embed", "face.png", "--out", "e.npy"],
    "eval": ["eval", "--data", ".", "--protocol", "pairs"],
    "enroll": ["enroll", "ann", "photo.jpg", "--gallery", "g.db"],
    "gallery import": ["gallery", "import", "export.json", "--gallery", "g.db"],
    "verify": ["verify", "artifact", "--data", "."],
    "bench": ["bench", "artifact", "--out", "bench"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("bad", BAD_VALUES)
def test_a_bad_model_is_one_line_and_exit_2(cli, tmp_path, monkeypatch, command, bad):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    value, message = BAD_VALUES[bad]
    value = "empty" if value == "FOLDER" else value
    code, out, err = cli(*COMMANDS[command], "--model", value)
    assert code == 2 and not out
    one_error_line(err, f"--model {value}", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]   # nothing written


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_commands_comparing_with_pytorch_refuse_an_artifact(cli, tmp_path, monkeypatch,
                                                            manifest_only, command):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*COMMANDS[command], "--model", manifest_only)
    assert code == 2
    one_error_line(err, "an exported artifact", "checkpoint")


def test_help_says_what_model_takes(capsys):
    for command in ("embed", "eval", "enroll", "identify", "adapt", "demo", "verify", "bench"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "checkpoint (model.pt) or a model name with shipped weights" in text, command
        assert ("Not an artifact folder" in text) == (command in ("verify", "bench")), command


# --- a checkpoint on the device path, an artifact in embed and eval -------------------------------

@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The checkpoint's artifact, exported into a fresh cache the way a device command does."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAFS_EDGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        return resolve_model(str(checkpoint)).artifact()


@pytest.mark.slow
def test_a_checkpoint_is_exported_once_into_the_cache(checkpoint, exported, monkeypatch):
    from lafs_edge.convert import pipeline

    assert (exported / "manifest.json").is_file()
    assert exported.name.startswith(f"part_fvit_tiny-{sha256_file(checkpoint)[:12]}-")
    monkeypatch.setenv("LAFS_EDGE_CACHE", str(exported.parents[1]))
    monkeypatch.setattr(pipeline, "export_models", lambda *a, **k: pytest.fail("exported again"))
    assert resolve_model(str(checkpoint)).artifact() == exported


@pytest.mark.slow
def test_embed_gives_the_same_vectors_from_the_artifact_and_the_checkpoint(
        cli, tmp_path, checkpoint, exported):
    rng = np.random.default_rng(0)
    faces = []
    for i in range(3):
        faces.append(tmp_path / f"face{i}.png")
        write_image(faces[-1], rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    rows = {}
    for model in (checkpoint, exported, exported / "manifest.json"):
        out = tmp_path / "e.npy"
        code, _, err = cli("embed", *faces, "--model", model, "--out", out)
        assert code == 0, err
        rows[model] = np.load(out)
    reference = rows.pop(checkpoint)
    for vectors in rows.values():
        assert np.einsum("ij,ij->i", vectors, reference).min() > 0.9999


@pytest.mark.slow
def test_eval_scores_an_artifact_like_its_checkpoint(cli, tmp_path, shared_data, checkpoint,
                                                     exported):
    """Flip test and all: the artifact's runtime against PyTorch on real ORL faces."""
    reports = []
    for model in (checkpoint, exported):
        out = tmp_path / "report.json"
        code, _, err = cli("eval", "--model", model, "--data", shared_data / "orl",
                           "--protocol", "kshot", "--k", "2", "--flip", "--out", out)
        assert code == 0, err
        reports.append(json.loads(out.read_text()))
    first, second = reports
    assert first["probes"] == second["probes"] > 0
    assert first["rank1"] == pytest.approx(second["rank1"], abs=0.02)


@pytest.mark.slow
def test_gallery_import_takes_the_checkpoint_for_its_artifact(cli, tmp_path, checkpoint,
                                                               exported, monkeypatch):
    """The checkpoint and its artifact are one model: same fingerprint, so the import passes."""
    from lafs_edge.gallery import Gallery, Shot
    from lafs_edge.runtime.embedder import Embedder

    monkeypatch.setenv("LAFS_EDGE_CACHE", str(exported.parents[1]))
    embedder = Embedder.from_artifact(exported)
    vector = np.zeros(embedder.embedding_dim, np.float32)
    vector[0] = 1
    with Gallery(tmp_path / "g.db") as gallery:
        gallery.enroll("ann", [Shot(vector)], embedder.fingerprint, embedder.label)
    export = tmp_path / "export.json"
    assert cli("gallery", "export", export, "--gallery", tmp_path / "g.db")[0] == 0
    for model in (checkpoint, exported):
        code, out, err = cli("gallery", "import", export, "--gallery",
                             tmp_path / f"from-{model.name}.db", "--model", model)
        assert code == 0, err
        assert "imported 1 shot" in out


# --- export's model name and overrides -----------------------------------------------------------

def test_export_of_a_name_means_its_shipped_weights(cli, tmp_path):
    """`export mobilefacenet` exports the shipped weights (with their threshold), as `--model
    mobilefacenet` means everywhere; random weights only with --random-init."""
    from lafs_edge.models.pretrained import weights_file
    from lafs_edge.hashing import sha256_file

    code, _, err = cli("export", "mobilefacenet", "--target", "pytorch", "--out", tmp_path / "a")
    assert code == 0, err
    manifest = json.loads((tmp_path / "a" / "mobilefacenet-pytorch-fp32" / "manifest.json").read_text())
    assert manifest["source_checkpoint_sha256"] == sha256_file(weights_file("mobilefacenet"))
    assert manifest["threshold"] is not None
    code, _, err = cli("export", "mobilefacenet", "--random-init", "--target", "pytorch",
                       "--out", tmp_path / "b")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "mobilefacenet-pytorch-fp32" / "manifest.json").read_text())
    assert manifest["parity"]["source"]["registry"] == "mobilefacenet"
    code, _, err = cli("export", "mobilefacenet", "model.overrides.width=0.5", "--target",
                       "pytorch", "--out", tmp_path / "c")
    assert code == 2
    one_error_line(err, "--random-init")


def test_export_spells_overrides_as_training_does(cli, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("export", "part_fvit_tiny", "--random-init", "model.overrides.preset=test",
                       "--target", "pytorch", "--out", out, "model.overrides={depth: 1}")
    assert code == 0, err
    manifest = json.loads((out / "part_fvit_tiny-pytorch-fp32" / "manifest.json").read_text())
    assert manifest["parity"]["source"]["overrides"] == {"preset": "test", "depth": 1}


@pytest.mark.parametrize("overrides, fragments", [
    (["--override", "depth=1"], ["model.overrides.depth=1"]),
    (["optim.lr=1"], ["export takes model.overrides.KEY=VALUE", "optim.lr=1"]),
    (["model.overrides=3"], ["export takes model.overrides.KEY=VALUE"]),
    (["model.overrides.no_such_argument=1"], ["bad override for part_fvit_tiny"]),
])
def test_bad_export_overrides_are_one_line(cli, tmp_path, overrides, fragments):
    code, _, err = cli("export", "part_fvit_tiny", "--random-init", "--target", "pytorch",
                       "--out", tmp_path / "out", *overrides)
    assert code == 2
    one_error_line(err, *fragments)
    assert not (tmp_path / "out").exists()


# --- errors and logging ------------------------------------------------------------------------

ERRORS = [UserError("bad input"), ValueError("bad value"),
          FileNotFoundError(errno.ENOENT, "No such file or directory", "gone.jpg"),
          PermissionError(errno.EACCES, "Permission denied", "locked.db"),
          ModuleNotFoundError("No module named 'cv2'", name="cv2"), RuntimeError("boom"),
          KeyboardInterrupt()]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_debug_shows_the_traceback_for_every_error(cli, monkeypatch, error):
    def fail(args):
        raise error

    monkeypatch.setattr(models_command, "run", fail)
    monkeypatch.delenv("LAFS_EDGE_DEBUG", raising=False)
    code, _, err = cli("models")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    monkeypatch.setenv("LAFS_EDGE_DEBUG", "1")
    debug_code, _, debug_err = cli("models")
    assert debug_code == code
    assert "Traceback (most recent call last)" in debug_err and "in fail" in debug_err
    assert debug_err.strip().splitlines()[-1] == err.strip().removesuffix(DEBUG_HINT)


def test_library_logging_shows_on_stderr_while_a_command_runs(cli, monkeypatch):
    library = logging.getLogger("lafs_edge.commands.artifacts")

    def chatty(args):
        library.info("exporting a model once")
        library.debug("details only a debugging user wants")
        return 0

    monkeypatch.setattr(models_command, "run", chatty)
    monkeypatch.delenv("LAFS_EDGE_DEBUG", raising=False)
    handlers = list(logging.getLogger("lafs_edge").handlers)
    assert cli("models") == (0, "", "lafs-edge: exporting a model once\n")
    assert logging.getLogger("lafs_edge").handlers == handlers   # the program's setup is back
    monkeypatch.setenv("LAFS_EDGE_DEBUG", "1")
    assert "lafs-edge: details only" in cli("models")[2]
