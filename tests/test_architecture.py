"""The architecture holds: the layer contract (pyproject.toml, `make lint`) is kept and really
sees the symlinked subpackages, and `lafs-edge --help` starts without torch."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.cli


def _env() -> dict[str, str]:
    """This checkout first on the path (an editable install elsewhere must not answer)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_the_layer_contract_is_kept():
    pytest.importorskip("importlinter")
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command;"
                             " lint_imports_command()", "--no-cache"],
                            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 broken" in result.stdout


def test_the_contract_sees_the_symlinked_subpackages():
    """lafs_edge/{train,convert,apps} are links: a graph that did not follow them would keep
    every contract vacuously. These imports are real ones, one per linked folder."""
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(REPO))
    try:
        graph = grimp.build_graph("lafs_edge", cache_dir=None)
    finally:
        sys.path.remove(str(REPO))
    seen = {(importer, imported) for importer, imported in [
        ("lafs_edge.convert.data", "lafs_edge.image_folders"),
        ("lafs_edge.train.sources", "lafs_edge.landmark_lists"),
        ("lafs_edge.apps.group_photos", "lafs_edge.hashing"),
        ("lafs_edge.commands.demo", "lafs_edge.apps.demo"),
    ] if graph.direct_import_exists(importer=importer, imported=imported)}
    assert len(seen) == 4, seen


@pytest.mark.parametrize("args", [["--help"], ["models", "--help"]])
def test_help_imports_no_torch(args):
    """The modules a fresh interpreter holds after `lafs-edge ARGS` printed its help."""
    program = ("import sys\nfrom lafs_edge.cli import main\ntry:\n    main(sys.argv[1:])\n"
               "except SystemExit:\n    pass\nprint(' '.join(sorted(sys.modules)), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", program, *args], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage: lafs-edge" in result.stdout, result.stderr[-2000:]
    modules = set(result.stderr.split())
    assert "lafs_edge.commands.models" in modules   # every command's options were read
    assert not {name for name in modules if name.split(".")[0] == "torch"}


def test_files_over_300_lines_are_named_in_the_architecture_doc():
    """The ~300-line mark of docs/architecture.md holds, or the doc says why not."""
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `([^`]+\.py)` \|", doc, flags=re.M))
    long_files = {str(path.relative_to(REPO)) for folder in ("lafs_edge", "train", "convert", "apps")
                  for path in (REPO / folder).rglob("*.py")
                  if not _through_a_link(path) and len(path.read_text().splitlines()) > 300}
    assert long_files <= named, sorted(long_files - named)


def test_the_long_files_table_names_only_long_files():
    """A file split below the mark leaves the table (train/distill.py was named at 387 lines
    after it had been split), so the table stays a list of what is still long."""
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc.split("## Files over ~300 lines", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `([^`]+\.py)` \|", section, flags=re.M)
    assert named, "the table of long files is missing"
    short = [name for name in named if not (REPO / name).is_file()
             or len((REPO / name).read_text().splitlines()) <= 300]
    assert not short, short


def _through_a_link(path: Path) -> bool:
    """lafs_edge/train etc. are links to the top-level folders: count each file once."""
    return any(parent.is_symlink() for parent in path.relative_to(REPO).parents
               if parent != Path(".") and (REPO / parent).is_symlink())


def test_every_package_data_pattern_matches_files():
    """pyproject's package-data lists only what exists (it once listed assets/ and configs/)."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    for package, patterns in config["tool"]["setuptools"]["package-data"].items():
        folder = REPO.joinpath(*package.split("."))
        for pattern in patterns:
            assert any(folder.glob(pattern)), f"{package}: {pattern} matches nothing"


def _library_files() -> list[Path]:
    return [path for folder in ("lafs_edge", "train", "convert", "apps")
            for path in sorted((REPO / folder).rglob("*.py")) if not _through_a_link(path)]


def test_no_module_imports_another_modules_private_name():
    """A leading underscore means "this module's own": a name another module needs is made
    public where it lives (the demo imported landmarks.smoothing._mesh_box)."""
    import ast

    private = []
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lafs_edge"):
                private += [f"{path.relative_to(REPO)}: {node.module}.{alias.name}"
                            for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not private, private


def test_the_demo_is_a_package_of_rooms():
    """apps/demo/ splits the demo along its seams, each room under the ~300-line mark, and the
    package still answers the names `lafs-edge demo`, the tests and the benchmarks import."""
    folder = REPO / "apps" / "demo"
    rooms = {path.stem: len(path.read_text().splitlines()) for path in folder.glob("*.py")}
    assert set(rooms) == {"__init__", "capture", "drawing", "event_log", "loop", "session",
                          "window"}, rooms
    assert max(rooms.values()) <= 300, rooms
    assert not (REPO / "apps" / "demo.py").exists()
    result = subprocess.run(
        [sys.executable, "-c", "from lafs_edge.apps.demo import (Demo, FaceResult, FrameResult,"
         " Recorder, Source, check_display, check_source, draw, require_gui, run_headless,"
         " run_window); print(Demo.__module__, run_window.__module__)"],
        env=_env(), capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["lafs_edge.apps.demo.loop", "lafs_edge.apps.demo.session"], \
        result.stderr[-2000:]
