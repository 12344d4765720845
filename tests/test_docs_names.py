"""Every file, function, class and module that README.md and docs/*.md name in backticks exists,
so the docs cannot drift from the code unnoticed (issue 23 found eleven places where they had).

What counts as a code name (anything else in backticks, such as a command line, a config value
or a number, is prose):
- a path: has a `/` or ends in .py/.yaml/.md/.json/.txt/.sh -> a file or folder, found from the
  repository root or one of the folders the docs abbreviate (lafs_edge/, train/, tests/, ...);
- a dotted name rooted in the package (`lafs_edge.x.y`, or `image.to_model_input`, `gallery.store`
  with the `lafs_edge.` left out) -> a module, or an attribute of one; a dotted name that is a
  training config key (`optim.lr`) is a config key, not code;
- a call, `name(...)` or `module.name(...)` -> that function, class or method is defined;
- a bare CamelCase word of two humps or more (`SeededDataset`) -> that class is defined.
"""
from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Where a doc's relative path may start (a doc says `runtime/shipped.py` for lafs_edge/runtime/...).
PATH_ROOTS = ["", "lafs_edge", "train", "docs", "tests", "benchmarks", "experiments", "convert", "apps"]
PACKAGE_TOP = {p.stem for p in (REPO / "lafs_edge").iterdir()
               if p.suffix == ".py" or (p / "__init__.py").is_file()} - {"__init__"}
CODE_DIRS = ["lafs_edge", "train", "convert", "apps", "benchmarks", "experiments", "tests"]
# Names the docs write in code style that are not ours to define: other libraries' functions and
# paths outside the checkout (../shared, the user's home, output folders that a run creates).
NOT_OURS = {
    "grid_sample", "torch.gather", "F.grid_sample", "torch.load", "torch.compile", "torch.export",
    "torch.onnx.export", "torch.jit.trace", "torch.set_num_threads", "hashlib.file_digest",
    "cv2.VideoCapture", "cv2.imshow", "ov.Core", "Core.compile_model", "FlopCounterMode",
    "getInputTensor(0).quantizationParams()", "wal_checkpoint(TRUNCATE)",   # Android, SQLite
    "@vladmandic/face-api", "skimage/data/lfw_subset.npy",                  # other packages
    "lafs-edge-gallery-export/1",                                           # a format name
    "alignment.template/crop_size", "input.shape/layout/color/mean/std",    # manifest fields
    ".cv2-gui/",                                                            # `make gui` makes it
    # the layouts of data sets the docs describe (../shared/data and public releases)
    "orl/sN/M.pgm", "yale/subject01.happy", "loose_crop/", "aligned/", "photos/sample2.jpg",
    "meta/ijbc_face_tid_mid.txt", "meta/ijbc_name_5pts_score.txt",
    "meta/ijbc_template_pair_label.txt", "wild5/landmarks.txt",
}
# Files a run or a data set has, not the checkout: named bare, they are kinds of file.
NOT_OURS_FILES = {"config.yaml"}
NOT_OURS_PATH_PREFIXES = ("../", "/", "~", "http", "runs/", "out/", "data/", "output_dir/",
                          "OUTPUT_DIR/", "$", "shared/", "checkpoints/", "benchmarks/results/")
# Source files the checkout holds; a bare name with another suffix (`model.onnx`, `train.rec`,
# `manifest.json`) names a kind of file that runs and data sets have.
FILE_SUFFIX = r"\.(py|yaml|md|toml|sh)$"
# A bare CamelCase word of two humps or more (`GlobalBatchSampler`) names one of our classes.
CLASS_NAME = r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)+"
DATA_SUFFIX = r"\.(idx|rec|lst|jpg|png|pgm|bin|onnx|xml|tflite|json|jsonl|txt|npy|pt)$"


def code_spans() -> list[tuple[str, str]]:
    """(doc name, text) of every inline code span outside fenced blocks."""
    spans = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        spans += [(doc.name, m.group(1).strip()) for m in re.finditer(r"`([^`\n]+)`", text)]
    return spans


def is_path(text: str) -> bool:
    return (" " not in text and "=" not in text and "(" not in text
            and ("/" in text or re.search(FILE_SUFFIX, text) is not None))


@cache
def defined_names() -> frozenset[str]:
    """Every function, method and class defined in the checkout's Python files."""
    names: set[str] = set()
    for folder in CODE_DIRS:
        for file in (REPO / folder).rglob("*.py"):
            tree = ast.parse(file.read_text(encoding="utf-8"))
            names |= {node.name for node in ast.walk(tree)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return frozenset(names)


@cache
def config_keys() -> frozenset[str]:
    """Every dotted training-config key and section (`optim.lr`, `model.overrides`)."""
    from lafs_edge.train.schema import STAGES
    from lafs_edge.train.schema.checks import fields_of, is_section

    keys: set[str] = set()

    def walk(section: type, prefix: str) -> None:
        for key, hint in fields_of(section).items():
            keys.add(prefix + key)
            if is_section(hint):
                walk(hint, f"{prefix}{key}.")
    for schema in STAGES.values():
        walk(schema, "")
    return frozenset(keys)


@cache
def file_names() -> frozenset[str]:
    return frozenset(p.name for p in REPO.rglob("*") if ".git" not in p.parts)


def path_exists(text: str) -> bool:
    text = text.rstrip("/").split("::")[0].split(":")[0]
    if text.startswith(NOT_OURS_PATH_PREFIXES) or any(c in text for c in "<>*{}[]"):
        return True
    if "/" not in text:   # a bare file name: a kind of file, or one somewhere in the checkout
        return text in NOT_OURS_FILES or text in file_names()
    return any((REPO / root / candidate).exists() for root in PATH_ROOTS
               for candidate in (text, f"{text}.py"))


def dotted_exists(name: str) -> bool:
    """`lafs_edge.a.b.c` (or `a.b.c` under lafs_edge): a module, or attributes below one."""
    parts = name.split(".")
    if parts[0] != "lafs_edge":
        parts = ["lafs_edge", *parts]
    for split in range(len(parts), 1, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def problem(text: str) -> str | None:
    """Why `text` names something that is not there, None when it is there or not a code name."""
    if text in NOT_OURS or ("/" not in text and re.search(DATA_SUFFIX, text)):
        return None
    if is_path(text):
        return None if path_exists(text) else "no such file or folder"
    call = re.fullmatch(r"([A-Za-z_][\w.]*)\([^=]*?\)|([A-Za-z_][\w.]*)\(.*\)", text)
    if call and " = " in text:   # a formula, not a call
        return None
    name = (call.group(1) or call.group(2)) if call else text
    if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+|[A-Za-z_]\w*", name):
        return None
    if "." in name:
        root = name.split(".")[0]
        if root != "lafs_edge" and (root not in PACKAGE_TOP or name in config_keys()
                                    or name.split(".", 1)[1] in config_keys()):
            return None
        if dotted_exists(name):
            return None
        *_, leaf = name.split(".")
        # `Class.method(...)` and `module.function(...)` written without the package path
        return None if call and leaf in defined_names() and root not in PACKAGE_TOP else \
            "no such module or attribute"
    if call and name not in defined_names():
        return "no function or class of that name"
    if not call and re.fullmatch(CLASS_NAME, name) and name not in defined_names():
        return "no class of that name"
    return None


def test_every_code_name_in_the_docs_exists():
    missing = sorted({f"{doc}: `{text}` ({why})" for doc, text in code_spans()
                      if (why := problem(text)) is not None})
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("text, found", [
    ("lafs_edge/runtime/shipped.py", True), ("runtime/shipped.py", True), ("train/distill.py", True),
    ("train/config_schema.py", False), ("image.to_model_input", True), ("image.to_input", False),
    ("lafs_edge.convert.export.build_artifact", True), ("convert.export.export_artifact", False),
    ("sample_patches(images, points, size)", True), ("recommended_threshold(name)", False),
    ("optim.lr", True), ("lafs-edge export MODEL --target onnx", True),
    ("SeededDataset", True), ("SeededDataLoader", False),
])
def test_the_check_tells_names_apart(text, found):
    assert (problem(text) is None) is found
