"""Issue 24 (hardening round 2), items 4, 6, 9, 10, 12 and 13: broken models and manifests,
oversized and corrupt images, and results a person can read. Each failed before the fix."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lafs_edge.errors import UserError
from lafs_edge.models import create_model, save_checkpoint
from testkit import one_error_line

pytestmark = pytest.mark.device

TINY = dict(preset="test")


# --- 4. a NaN model --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory) -> Path:
    model = create_model("part_fvit_tiny", **TINY)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    path = tmp_path_factory.mktemp("nan") / "nan.pt"
    save_checkpoint(model, path)
    return path


def test_embed_refuses_nan_vectors(cli, nan_checkpoint, tmp_path):
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((112, 112, 3), 128, np.uint8))
    code, _, err = cli("embed", face, "--model", nan_checkpoint, "--out", tmp_path / "e.npy")
    assert code == 2
    one_error_line(err, "non-finite")
    assert not (tmp_path / "e.npy").exists()


def test_kshot_evaluation_of_a_nan_model_is_an_error_not_a_perfect_score(cli, nan_checkpoint,
                                                                        shared_data):
    code, out, err = cli("eval", "--model", nan_checkpoint, "--data", shared_data / "orl",
                         "--protocol", "kshot", "--k", "1")
    assert code == 2 and "rank1" not in out
    one_error_line(err, "non-finite")


# --- 6. degenerate manifests -----------------------------------------------------------------------

@pytest.fixture()
def artifact(tiny_artifact, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny_artifact, tmp_path / "artifact"))


def edit_manifest(folder: Path, **changes) -> None:
    file = folder / "manifest.json"
    data = json.loads(file.read_text())
    for key, value in changes.items():
        if key == "template":
            data["alignment"]["template"] = value
        else:
            data[key] = value
    file.write_text(json.dumps(data))


def load(folder: Path):
    from lafs_edge.runtime.embedder import Embedder

    return Embedder.from_artifact(folder)


@pytest.mark.parametrize("template", [[[0, 0]] * 5,
                                      [[10, 10], [20, 20], [30, 30], [40, 40], [50, 50]],
                                      [[38, 51], [73, 51], [56, 71], [41, 92], [70, 92000]],
                                      [[float("nan"), 51], [73, 51], [56, 71], [41, 92],
                                       [70, 92]]])
def test_a_degenerate_template_is_refused(artifact, template):
    """Five equal points made every stranger match (cosine 0.947); a NaN one failed with `SVD
    did not converge`."""
    edit_manifest(artifact, template=template)
    with pytest.raises(UserError, match="degenerate|outside the|finite numbers"):
        load(artifact)


def test_a_model_file_outside_the_folder_is_refused(artifact, tmp_path):
    manifest = json.loads((artifact / "manifest.json").read_text())
    model = artifact / manifest["model_file"]
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(model.read_bytes())   # same bytes, same hash: only the place differs
    for name in ("../elsewhere.pt", str(outside)):
        edit_manifest(artifact, model_file=name)
        with pytest.raises(UserError, match="outside the artifact folder"):
            load(artifact)
    model.unlink()
    model.symlink_to(outside)
    edit_manifest(artifact, model_file=manifest["model_file"])
    with pytest.raises(UserError, match="outside the artifact folder"):
        load(artifact)


def test_a_bad_manifest_is_one_line_through_the_cli(cli, artifact, tmp_path):
    edit_manifest(artifact, template=[[0, 0]] * 5)
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((112, 112, 3), 128, np.uint8))
    code, _, err = cli("embed", face, "--model", artifact, "--out", tmp_path / "e.npy")
    assert code == 2
    one_error_line(err, "degenerate")


def test_a_nan_threshold_is_refused_when_writing(cli, shared_models, tmp_path):
    from lafs_edge.runtime.embedder import RETAIL_0095, external_manifest
    from lafs_edge.runtime.manifest import write_manifest

    xml = shared_models / RETAIL_0095 / "FP16" / f"{RETAIL_0095}.xml"
    code, _, err = cli("manifest-external", xml, "--out", tmp_path / "a", "--threshold", "nan")
    assert code == 2 and "--threshold" in err
    assert not (tmp_path / "a" / "manifest.json").exists()
    with pytest.raises(UserError, match="threshold"):
        write_manifest(external_manifest(xml, threshold=float("nan")), tmp_path / "b")
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_manifest_external_copies_the_model_into_its_folder(cli, shared_models, tmp_path):
    from lafs_edge.runtime.embedder import RETAIL_0095

    xml = shared_models / RETAIL_0095 / "FP16" / f"{RETAIL_0095}.xml"
    assert cli("manifest-external", xml, "--out", tmp_path / "a")[0] == 0
    data = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert data["model_file"] == xml.name and (tmp_path / "a" / xml.name).is_file()
    assert load(tmp_path / "a").embedding_dim == 256


# --- 9. bounded inputs ------------------------------------------------------------------------------

def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny file whose header claims width x height (what a decompression bomb looks like to
    the first reader: OpenCV would allocate it all)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * width))) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [30000, 60000])
def test_a_huge_image_is_refused_from_its_header(cli, tiny_artifact, tmp_path, side):
    import resource

    bomb = png_header_only(tmp_path / "bomb.png", side, side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = cli("embed", bomb, "--model", tiny_artifact, "--out", tmp_path / "e.npy")
    assert code == 2
    one_error_line(err, "megapixels is over the 100-megapixel limit", "--max-pixels")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib


def test_max_pixels_sets_the_limit(cli, tiny_artifact, tmp_path):
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((112, 112, 3), 128, np.uint8))
    code, _, err = cli("--max-pixels", "10000", "embed", face, "--model", tiny_artifact,
                       "--out", tmp_path / "e.npy")
    assert code == 2
    one_error_line(err, "over the 0.01-megapixel limit")
    assert cli("--max-pixels", "20000", "embed", face, "--model", tiny_artifact,
               "--out", tmp_path / "e.npy")[0] == 0
    code, _, err = cli("--max-pixels", "nan", "gallery", "list", "--gallery", tmp_path / "g.db")
    assert code == 2 and "--max-pixels" in err


def test_a_config_asking_for_a_huge_model_is_refused_before_building(cli, tmp_path):
    from lafs_edge.models.registry import CHECKPOINT_FORMAT

    crafted = tmp_path / "huge.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "arch": "part_fvit_tiny", "state_dict": {},
                "config": {"dim": 16384, "mlp_dim": 65536, "heads": 64, "head_dim": 256}}, crafted)
    assert crafted.stat().st_size < 4096
    code, _, err = cli("export", crafted, "--target", "pytorch", "--out", tmp_path / "out")
    assert code == 2
    one_error_line(err, "parameters", "refused before building it")
    code, _, err = cli("export", "part_fvit_tiny", "--random-init", "model.overrides.depth=100000", "--target",
                       "pytorch", "--out", tmp_path / "out")
    assert code == 2
    one_error_line(err, "depth 100000")


def test_a_checkpoint_that_inflates_is_refused_before_loading(cli, tmp_path):
    import zipfile

    crafted = tmp_path / "inflating.pt"
    with zipfile.ZipFile(crafted, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("archive/data.pkl", bytes(64 * 2**20))
    assert crafted.stat().st_size < 2**20
    code, _, err = cli("export", crafted, "--target", "pytorch", "--out", tmp_path / "out")
    assert code == 2
    one_error_line(err, "inflate to 64 MiB")


# --- 10 and 12. corrupt images, folders and FIFOs --------------------------------------------------

def test_a_corrupt_jpeg_with_its_end_marker_is_refused(tiny_artifact, tmp_path):
    from lafs_edge.image import read_image

    noise = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".jpg", noise)[1].tobytes())
    middle = len(data) // 2
    data[middle:middle + 300] = bytes(b ^ 0x5A for b in data[middle:middle + 300])
    assert data.endswith(b"\xff\xd9")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(UserError, match="the decoder reported: Corrupt JPEG data"):
        read_image(corrupt)
    done = run_lafs_edge("embed", corrupt, "--model", tiny_artifact, "--out", tmp_path / "e.npy")
    assert done.returncode == 2
    one_error_line(done.stderr, "Corrupt JPEG data")   # and no libjpeg line before it


def run_lafs_edge(*args):
    """The CLI in a child process: what native libraries print on file descriptor 2 counts."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "lafs_edge.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_a_folder_or_a_fifo_is_not_an_image(tmp_path):
    import os

    from lafs_edge.image import read_image

    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(UserError, match="not an image file: .*a folder"):
        read_image(tmp_path / "dir.jpg")
    with pytest.raises(UserError, match="not an image file: .*not a regular file"):
        read_image(tmp_path / "pipe.jpg")
