"""The gallery's files on disk: creating one in a single step, opening one without touching it
until it is known to be ours, SQLite errors as sentences, and our own temporary files.

Temporaries follow lafs_edge/fileio.py's naming, `.NAME.tmpPID` beside the target; one whose
process is gone was left by a kill (SIGKILL, power loss) and is removed by the next run.
"""
from __future__ import annotations

import errno
import os
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from lafs_edge.errors import UserError

SIDE_FILES = ("-wal", "-shm", "-journal")   # SQLite's companions of a database file


class SqliteError(UserError):
    """An SQLite failure as a sentence; `reason` is its cause alone, for other sentences."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class GalleryBusy(SqliteError):
    """Another process held the gallery's write lock for longer than the timeout."""


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete `.NAME.tmpPID` files (and their SQLite companions) beside `path` whose process
    no longer runs; returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp(\d+)(-wal|-shm|-journal)?")
    removed = []
    for candidate in path.parent.glob(f".{glob_escape(path.name)}.tmp*"):
        match = pattern.fullmatch(candidate.name)
        if match and not process_alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False   # ours from an earlier, failed step of this run
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True    # someone else's live process
    return True


def create_gallery_file(path: Path, schema: str, format_name: str) -> None:
    """Make an empty gallery at `path` in one step: the database is built in memory, written
    0600 under a temporary name, synced, then hard-linked into place. So no process ever sees
    a 0-byte or half-made gallery, and a file someone else created first is left alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    memory = sqlite3.connect(":memory:")
    memory.executescript(schema)
    memory.execute("INSERT INTO meta VALUES ('format', ?)", (format_name,))
    memory.commit()
    data = memory.serialize()
    memory.close()
    tmp = temporary_name(path)
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _link_no_clobber(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _link_no_clobber(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        pass   # another process created the gallery first: use theirs
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
            raise
        if not target.exists():   # a file system without hard links
            os.replace(source, target)


def read_only_uri(path: Path) -> str:
    """A read-only SQLite URI. In a directory we cannot write, SQLite cannot make the -shm file
    a WAL reader needs; with no -wal there, no writer can exist either, so `immutable` is
    safe and lets the gallery be read."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    if not os.access(path.parent, os.W_OK) and not Path(f"{path}-wal").exists():
        uri += "&immutable=1"
    return uri


def check_writable(path: Path) -> None:
    """A write needs the file and its folder (for the -wal/-shm files) writable."""
    for target in (path, path.parent):
        if not os.access(target, os.W_OK):
            raise UserError(f"gallery {path} is read-only ({'its folder' if target != path else 'the file'} "
                            "is not writable): it can be listed and used to identify, not changed")


@contextmanager
def sqlite_errors(path: Path, timeout: float) -> Iterator[None]:
    """SQLite's operational errors as one sentence each."""
    try:
        yield
    except sqlite3.OperationalError as e:
        raise explain(e, path, timeout) from None


def explain(error: sqlite3.Error, path: Path, timeout: float) -> SqliteError:
    text = str(error).lower()
    if "locked" in text or "busy" in text:
        return GalleryBusy(f"gallery {path} is busy: another process kept it locked for more "
                           f"than {timeout:g} s (an enrollment, import or delete); try again "
                           "when it has finished", "another process kept it locked")
    if "readonly" in text or "read-only" in text:
        return SqliteError(f"gallery {path} is read-only: it can be listed and used to identify, "
                           "not changed", "the file is read-only")
    if "disk is full" in text or "disk i/o" in text:
        return SqliteError(f"gallery {path}: the disk is full or failing ({error}); nothing was "
                           "changed", "the disk is full or failing")
    if "malformed" in text or "not a database" in text:
        return SqliteError(f"gallery {path} is damaged (SQLite: {error}); restore it from a "
                           "backup or an export", "the file is damaged")
    return SqliteError(f"gallery {path}: {error}", str(error))



def check_export_target(out: Path, gallery: Path, force: bool = False) -> None:
    """Refuse to write an export over the gallery itself (also through a link), over one of its
    SQLite companion files, onto a folder, over any SQLite database (another gallery), and over
    any other existing file unless `force`: an export replaces its target, and a mistyped name
    must not cost someone a file."""
    if out.is_dir():
        raise UserError(f"{out} is a folder; give a file name for the export (e.g. "
                        f"{out / 'gallery.json'})")
    real = gallery.resolve()   # SQLite names the companions after the real file
    protected = [gallery] + [Path(f"{base}{suffix}") for base in {gallery, real}
                             for suffix in SIDE_FILES]
    for target in protected:
        same_name = out.resolve() == target.resolve()
        same_file = out.exists() and target.exists() and os.path.samefile(out, target)
        if same_name or same_file:
            raise UserError(f"{out} is the gallery {'file' if target == gallery else 'companion file'} "
                            f"{target}; exporting there would destroy it: choose another file")
    if out.exists() or out.is_symlink():
        if is_sqlite_file(out):
            raise UserError(f"{out} is an SQLite database (a gallery?); an export never replaces "
                            "one, even with --force: choose another file")
        if not force:
            raise UserError(f"{out} already exists; choose another file, or pass --force to "
                            "replace it")


def is_sqlite_file(path: Path) -> bool:
    """True for a file starting with SQLite's header (read, never opened as a database)."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False
