"""Issue 24 (hardening round 2), items 1, 2 and 14: an export never replaces what is not its
own (another gallery, a text file, a folder of someone's work), and what a killed export leaves
is removed by the next one."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lafs_edge.convert.export import build_artifact
from lafs_edge.errors import UserError
from lafs_edge.gallery import Gallery, Shot
from lafs_edge.models import create_model
from lafs_edge.runtime.manifest import FORMAT
from testkit import one_error_line, unit

pytestmark = pytest.mark.device


def make_gallery(path: Path, name: str, seed: int) -> Path:
    with Gallery(path) as gallery:
        gallery.enroll(name, [Shot(unit(seed), "s")], "a" * 64, "m")
    return path


# --- 1. gallery export over an existing file ---------------------------------------------------

def test_gallery_export_never_replaces_another_gallery(cli, tmp_path):
    base = make_gallery(tmp_path / "base.db", "ann", 1)
    other = make_gallery(tmp_path / "other.db", "bob", 2)
    before = other.read_bytes()
    for extra in ((), ("--force",)):
        code, out, err = cli("gallery", "export", other, "--gallery", base, *extra)
        assert code == 2 and out == ""
        one_error_line(err, "SQLite database", "never replaces")
    assert other.read_bytes() == before


def test_gallery_export_replaces_an_existing_file_only_with_force(cli, tmp_path):
    base = make_gallery(tmp_path / "base.db", "ann", 1)
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho precious\n")
    code, _, err = cli("gallery", "export", script, "--gallery", base)
    assert code == 2
    one_error_line(err, "already exists", "--force")
    assert script.read_text() == "#!/bin/sh\necho precious\n"
    assert cli("gallery", "export", script, "--gallery", base, "--force")[0] == 0
    assert json.loads(script.read_text())["people"][0]["name"] == "ann"


# --- 2. export --name onto a folder that is not an artifact ---------------------------------------

def _export(folder: Path):
    return build_artifact(create_model("part_fvit_tiny", preset="test"), "pytorch", "fp32", folder,
                          None, [], lambda tmp, converted: (tmp / "manifest.json").write_text(
                              json.dumps({"format": FORMAT})))


def test_export_refuses_to_replace_a_folder_that_is_not_an_artifact(cli, tmp_path):
    victim = tmp_path / "victim-pytorch-fp32"
    victim.mkdir()
    (victim / "thesis.txt").write_text("four years")
    code, _, err = cli("export", "part_fvit_tiny", "--random-init", "model.overrides.preset=test", "--target",
                       "pytorch", "--name", "victim", "--out", tmp_path)
    assert code == 2
    one_error_line(err, "not a lafs-edge artifact")
    assert (victim / "thesis.txt").read_text() == "four years"
    with pytest.raises(UserError, match="not a lafs-edge artifact"):
        _export(victim)
    assert (victim / "thesis.txt").exists()


def test_export_still_replaces_its_own_artifact(tmp_path):
    folder = tmp_path / "mine"
    _export(folder)
    (folder / "stale.txt").write_text("from the previous export")
    _export(folder)
    assert not (folder / "stale.txt").exists()


# --- 14. a SIGKILLed export's temporary folders ----------------------------------------------------

def test_export_removes_the_temporary_folders_a_killed_export_left(tmp_path):
    dead = _dead_pid()
    leftovers = [tmp_path / f".art.tmp{dead}", tmp_path / f".art.old{dead}"]
    for folder in leftovers:
        folder.mkdir()
        (folder / "model.pt").write_bytes(b"half")
    _export(tmp_path / "art")
    assert sorted(os.listdir(tmp_path)) == ["art"]


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)
