"""Shared fixtures. Tests that need ../shared (real faces, the external model) skip cleanly without it."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: an unmarked test must not vanish silently
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test belongs to exactly one area (pyproject.toml: the markers described "area: ..."),
    so `pytest -m <area>` selects it."""
    areas = {line.partition(":")[0] for line in config.getini("markers")
             if line.partition(":")[2].strip().startswith("area:")}
    wrong = sorted({item.nodeid.split("::")[0] for item in items
                    if len(areas & {mark.name for mark in item.iter_markers()}) != 1})
    if wrong:
        raise pytest.UsageError(
            f"test files without exactly one area marker: {', '.join(wrong)}. Add one "
            f"module-level line after the imports, `pytestmark = pytest.mark.<area>`, "
            f"area one of: {', '.join(sorted(areas))} (pyproject.toml lists them)")


@pytest.fixture()
def cli(capsys):
    """Run `lafs-edge ARGS` in process -> (exit code, stdout, stderr); argparse errors too."""
    from lafs_edge.cli import main

    def run(*args) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """A PyTorch artifact folder of the test-preset part fViT (random weights), exported by the
    CLI; tests that tamper with it copy it first."""
    from lafs_edge.cli import main

    out = tmp_path_factory.mktemp("artifacts")
    assert main(["export", "part_fvit_tiny", "--random-init", "model.overrides.preset=test",
                 "--target", "pytorch", "--out", str(out), "--name", "tiny"]) == 0
    return out / "tiny-pytorch-fp32"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"real face data not found at {path} (../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared_models() -> Path:
    path = SHARED / "models"
    if not path.is_dir():
        pytest.skip(f"external models not found at {path} (../shared/models beside the checkout)")
    return path


@pytest.fixture(scope="session")
def mediapipe_models() -> Path:
    """MediaPipe's face models in the cache, fetched from PyPI on first use (CI has PyPI);
    skips when they cannot be fetched (no network)."""
    from lafs_edge.landmarks import ModelsUnavailable, fetch_models

    try:
        return fetch_models(log=lambda message: None)
    except ModelsUnavailable as e:
        pytest.skip(f"MediaPipe face models unavailable: {e}")


@pytest.fixture(scope="session")
def face_analyzer(mediapipe_models):
    from lafs_edge.landmarks import FaceAnalyzer

    return FaceAnalyzer(mediapipe_models)


@pytest.fixture(scope="session")
def retail_0095(shared_models, tmp_path_factory) -> dict[str, Path]:
    """Artifact folders (manifest.json only, pointing into ../shared/models) for the external
    face-reidentification-retail-0095 model: {"FP16": folder, "FP16-INT8": folder}."""
    from lafs_edge.runtime.embedder import RETAIL_0095, external_manifest
    from lafs_edge.runtime.manifest import write_manifest

    folders = {}
    for precision in ("FP16", "FP16-INT8"):
        xml = shared_models / RETAIL_0095 / precision / f"{RETAIL_0095}.xml"
        if not xml.is_file():
            pytest.skip(f"{xml} not found")
        folder = tmp_path_factory.mktemp(f"retail-{precision}")
        write_manifest(external_manifest(xml), folder)
        folders[precision] = folder
    return folders
