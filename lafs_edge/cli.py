"""`lafs-edge`: one command, a sub-command for every job.

Each sub-command lives in its own module exposing `configure(parser)` and `run(args) -> int`.
Those modules import heavy dependencies (torch, converters) inside `run`, and `lafs_edge/__init__`
loads torch only on first use, so `--help` imports no torch (0.3 s rather than 3 s on the 2-CPU
machine of docs/benchmarks.md; tests/test_architecture.py checks it) and a missing optional
dependency (say, coremltools) only affects the commands that need it.
"""
from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(signum, frame):
    """Ctrl-C before `main` is running (importing, building the parser): the same one word and
    exit 130 as later, not a traceback of whatever module was loading."""
    print("interrupted", file=sys.stderr)
    os._exit(130)


# First thing the `lafs-edge` command (or `python -m lafs_edge.cli`) runs; a program importing
# this module for `main` keeps its own Ctrl-C, and so does a shell that made us ignore it (`&`).
if ((os.path.basename(sys.argv[0]) == "lafs-edge" or __name__ == "__main__")
        and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse  # noqa: E402 - after the handler: these imports can be interrupted too
import contextlib  # noqa: E402
import errno  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import traceback  # noqa: E402

from lafs_edge.errors import UserError  # noqa: E402

# name -> (module, one-line help). Nested groups ("train supervised") use a space.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("lafs_edge.commands.models", "list registered models: parameters and GFLOPs"),
    "embed": ("lafs_edge.commands.embed", "embed aligned 112x112 faces into L2-normalised vectors"),
    "train supervised": ("lafs_edge.commands.train_supervised", "supervised part fViT with CosFace/ArcFace (torchrun for DDP)"),
    "train pretrain": ("lafs_edge.commands.train_pretrain", "LAFS self-supervised pretraining on unlabelled faces (torchrun for DDP)"),
    "train finetune": ("lafs_edge.commands.train_finetune", "fine-tune a pretrained part fViT on (k-shot) labelled faces"),
    "train distill": ("lafs_edge.commands.train_distill", "distil a teacher (checkpoint or ONNX/OpenVINO) into an edge student"),
    "data pack": ("lafs_edge.commands.data_pack", "pack an image folder into RecordIO or WebDataset shards"),
    "data kshot": ("lafs_edge.commands.data_kshot", "write a k-shot list (k per identity, fixed seed)"),
    "export": ("lafs_edge.commands.export", "convert a model to ONNX, OpenVINO, TFLite or Core ML (fp32, fp16, int8) with its manifest"),
    "verify": ("lafs_edge.commands.verify", "check an exported artifact against its PyTorch source on real faces"),
    "bench": ("lafs_edge.commands.bench", "latency, throughput and size of artifacts beside PyTorch eager"),
    "eval": ("lafs_edge.commands.eval", "evaluate a model: verification pairs, .bin, IJB-B/C, k-shot"),
    "fetch-models": ("lafs_edge.commands.fetch_models", "download MediaPipe's face detection and mesh models (once)"),
    "manifest-external": ("lafs_edge.commands.manifest_external", "write a manifest.json for the external face-reidentification-retail-0095 model"),
    "enroll": ("lafs_edge.commands.enroll", "enroll a person from photos into a gallery"),
    "identify": ("lafs_edge.commands.identify", "detect, align, embed and name every face in photos"),
    "adapt": ("lafs_edge.commands.adapt", "train the on-device head on the enrolled people (seconds, CPU)"),
    "demo": ("lafs_edge.commands.demo", "live recognition: camera window, or a video/folder to an annotated file"),
    "gallery list": ("lafs_edge.commands.gallery_list", "list the enrolled people"),
    "gallery delete": ("lafs_edge.commands.gallery_delete", "remove a person (rows deleted, file vacuumed)"),
    "gallery export": ("lafs_edge.commands.gallery_export", "write the gallery to a portable file"),
    "gallery import": ("lafs_edge.commands.gallery_import", "merge an exported gallery (same model only)"),
}


class OneLineErrors(argparse.ArgumentParser):
    """A bad argument is one `error:` line (and exit 2) like every other bad input; the
    sub-commands inherit this class."""

    def error(self, message: str):
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from lafs_edge import __version__

    parser = OneLineErrors(prog="lafs-edge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lafs-edge {__version__}")
    parser.add_argument("--max-pixels", type=_pixel_count, default=None, metavar="N",
                        help="refuse images of more than N pixels, read from the header before "
                             "decoding (default 100000000: 100 megapixels, 300 MB decoded)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        *group, leaf = name.split()
        target = subparsers
        if group:
            if group[0] not in groups:
                group_parser = subparsers.add_parser(group[0], help=f"{group[0]} sub-commands")
                groups[group[0]] = group_parser.add_subparsers(
                    dest=f"{group[0]}_command", metavar="COMMAND", required=True)
            target = groups[group[0]]
        sub = target.add_parser(leaf, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        _configure(sub, module_name)
    return parser


def _pixel_count(text: str) -> int:
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _configure(parser: argparse.ArgumentParser, module_name: str) -> None:
    importlib.import_module(module_name).configure(parser)


def main(argv: list[str] | None = None) -> int:
    previous = _exit_cleanly_on_sigterm()
    previous_interrupt = _interrupt_as_exception()
    try:   # from parsing on: the parser imports every command module
        args = parse_arguments(build_parser(), argv)
        with _log_to_stderr(), _pixel_limit(args.max_pixels):
            return int(importlib.import_module(args._module).run(args) or 0)
    except (Exception, KeyboardInterrupt) as e:
        if debugging():   # users get one line; the traceback only when asked for, whatever the type
            traceback.print_exc()
        return report(e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_interrupt is not None:
            signal.signal(signal.SIGINT, previous_interrupt)


_interrupted = False   # a SIGINT arrived during this `main`


def _interrupt_as_exception():
    """While `main` runs, Ctrl-C raises KeyboardInterrupt (transactions roll back, temporary
    files are removed, `report` says "interrupted"); returns the handler to restore."""
    global _interrupted
    _interrupted = False
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return None   # started in the background (`&`): Ctrl-C is not for us
    try:
        return signal.signal(signal.SIGINT, _on_interrupt)
    except ValueError:   # not the main thread
        return None


def _on_interrupt(signum, frame):
    """Remember the interrupt: raised inside an import, KeyboardInterrupt can come out as
    another error (numpy re-raises it as ImportError "you should not try to import numpy from
    its source directory"), which must still be reported as the interruption it is."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """`parse_args`, except that `key=value` overrides may also follow the options (argparse
    fills a command's positionals from the first run of them, so `export MODEL --target onnx
    model.overrides.depth=1` would otherwise be refused)."""
    args, extras = parser.parse_known_args(argv)
    overrides = getattr(args, "overrides", None)
    if extras and isinstance(overrides, list) and all(
            "=" in item and not item.startswith("-") for item in extras):
        overrides.extend(extras)
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def debugging() -> bool:
    return os.environ.get("LAFS_EDGE_DEBUG", "") not in ("", "0")


def report(e: BaseException) -> int:
    """Print the one-line message for `e`; returns the exit code."""
    if isinstance(e, Terminated):
        print("terminated", file=sys.stderr)
        return 143
    if isinstance(e, KeyboardInterrupt) or _interrupted:
        print("interrupted", file=sys.stderr)
        return 130
    if isinstance(e, BrokenPipeError):   # `lafs-edge gallery list | head -1`: the reader left
        _silence_stdout()
        return 141   # 128 + SIGPIPE, what a shell reports for a program killed by it
    if isinstance(e, RecursionError):
        print("error: the input is nested too deeply to read (a YAML or JSON file?)",
              file=sys.stderr)
        return 2
    if _is_sqlite_error(e):
        print(f"error: an SQLite database is damaged or not what was expected (SQLite: {e})",
              file=sys.stderr)
        return 2
    if isinstance(e, ModuleNotFoundError) and e.name == "cv2":
        # neither OpenCV build is a base dependency: the user picks one
        print("error: OpenCV is not installed: pip install 'lafs-edge[headless]' (or "
              "'lafs-edge[gui]' for the camera window)", file=sys.stderr)
        return 2
    if isinstance(e, (UserError, FileNotFoundError, ValueError)):
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(e, OSError):
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    hint = "" if debugging() else " (set LAFS_EDGE_DEBUG=1 for the traceback)"
    print(f"error: {type(e).__name__}: {e}{hint}", file=sys.stderr)
    return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _is_sqlite_error(e: BaseException) -> bool:
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(e, sqlite3.DatabaseError)


@contextlib.contextmanager
def _log_to_stderr():
    """Library modules log through `logging` (a logger per module, under "lafs_edge"); while a
    command runs their messages go to stderr as `lafs-edge: message`, INFO and up (DEBUG with
    LAFS_EDGE_DEBUG). The handler is made per call, on the stderr of that moment, and removed
    after, so a program calling `main` keeps its own logging setup."""
    logger = logging.getLogger("lafs_edge")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lafs-edge: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debugging() else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def _pixel_limit(max_pixels: int | None):
    """--max-pixels for this call only (a program may call `main` more than once)."""
    from lafs_edge import image

    previous = image.MAX_PIXELS
    image.MAX_PIXELS = max_pixels or previous
    try:
        yield
    finally:
        image.MAX_PIXELS = previous


def _exit_cleanly_on_sigterm():
    """SIGTERM (kill, systemd, a container stop) unwinds like Ctrl-C, so open transactions
    roll back and temporary files are removed; returns the handler to restore."""
    try:
        return signal.signal(signal.SIGTERM, _terminated)
    except ValueError:   # not the main thread: leave signals alone
        return None


class Terminated(KeyboardInterrupt):
    """SIGTERM; a KeyboardInterrupt so code that cleans up after Ctrl-C does it here too."""


def _terminated(signum, frame):
    raise Terminated


OS_ERROR_HINTS: dict[int | None, str] = {  # OSError.errno may be None
    errno.EEXIST: "already exists (as a file where a folder is needed, or the reverse)",
    errno.ENOTDIR: "a file is in the way where a folder is needed",
    errno.EISDIR: "is a folder, a file is needed",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the disk",
}


def describe_os_error(error: OSError) -> str:
    """`[Errno 17] File exists: 'out'` -> `out: already exists (...)`."""
    what = OS_ERROR_HINTS.get(error.errno, error.strerror or type(error).__name__)
    where = error.filename if error.filename is not None else "file system"
    return f"{where}: {what}"


if __name__ == "__main__":
    sys.exit(main())
