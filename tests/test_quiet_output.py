"""Third-party noise on the normal path (issue 22 item 13): what the project triggers is
silenced, real warnings stay."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.conversion

REPO = Path(__file__).resolve().parents[1]


def test_native_noise_is_dropped_and_real_lines_kept(capfd):
    from lafs_edge.convert import native_noise_filtered

    with native_noise_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n")
        os.write(2, b"I0000 00:00:1 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"I0000 flatbuffer_export.cc:4410] Estimated count of arithmetic ops: 1 M\n")
        os.write(2, b"E0000 converter.cc:1] a real error\n")
    assert capfd.readouterr().err == "E0000 converter.cc:1] a real error\n"


def test_optional_kernel_notes_are_dropped_and_other_warnings_kept(caplog):
    import lafs_edge.convert  # noqa: F401 - installs the filters

    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to load /x/torchao/_C_mxfp8.so: no CUDA")
        logging.getLogger("coremltools").warning("Failed to load _MLModelProxy: No module")
        logging.getLogger("torch.utils._pytree").warning(
            "<enum 'KernelPreference'> is an Enum subclass ... Calling register_constant() on "
            "Enum subclasses is deprecated and will be an error in a future release.")
        logging.getLogger("torchao").warning("a real torchao warning")
    assert [r.getMessage() for r in caplog.records] == ["a real torchao warning"]


def test_the_license_is_an_spdx_expression():
    """setuptools warned "`project.license` as a TOML table is deprecated" on every install."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]


@pytest.mark.slow
def test_a_tflite_export_prints_only_its_result(tmp_path):
    """A fresh process, as a user runs it: no torchao, torch, absl, oneDNN or LiteRT lines."""
    import subprocess
    import sys

    pytest.importorskip("litert_torch")
    done = subprocess.run([sys.executable, "-m", "lafs_edge.cli", "export", "mobilefacenet",
                           "--target", "tflite", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.startswith("wrote "), done.stderr
