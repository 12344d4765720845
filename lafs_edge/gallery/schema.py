"""What a gallery file may contain: exactly the tables and indexes lafs-edge creates, and no
shot without its person.

A gallery is a file anyone can edit with `sqlite3`. A planted trigger can copy every deleted
row somewhere else (defeating erasure) or rewrite who matches whom; shot rows whose person is
gone are never erased by a delete and are silently given to the next person created with the
same row id. So a file whose schema differs from the project's, or that holds such rows, is
refused on open with one line, before anything reads or writes it.
"""
from __future__ import annotations

import functools
import re
import sqlite3
from pathlib import Path

from lafs_edge.errors import UserError

class TamperedGallery(UserError):
    """The gallery file holds schema objects or rows that lafs-edge never writes."""


def check_schema(db: sqlite3.Connection, path: Path, schema: str) -> None:
    expected = _expected(schema)
    for kind, name, table, sql in db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master"):
        if name.startswith("sqlite_autoindex_") and sql is None:
            continue   # the indexes SQLite makes for UNIQUE and PRIMARY KEY columns
        if expected.get(name) != (kind, table, _normal(sql)):
            what = "a changed definition of" if name in expected else "an unexpected"
            raise TamperedGallery(f"gallery {path} was changed outside lafs-edge ({what} {kind} "
                                  f"{name!r}); refusing to use it: restore it from an export")
    orphans = db.execute("SELECT COUNT(*) FROM embeddings WHERE person_id NOT IN "
                         "(SELECT id FROM people)").fetchone()[0]
    if orphans:
        raise TamperedGallery(f"gallery {path} was changed outside lafs-edge ({orphans} shot(s) "
                              "belong to no person and would pass to the next person enrolled); "
                              "refusing to use it: restore it from an export")


@functools.lru_cache(maxsize=4)
def _expected(schema: str) -> dict[str, tuple[str, str, str]]:
    """name -> (type, table, SQL) of every object the project's statements create."""
    from lafs_edge.gallery.adapt import ADAPTERS_TABLE

    memory = sqlite3.connect(":memory:")
    try:
        memory.executescript(schema + ";" + ADAPTERS_TABLE)
        return {name: (kind, table, _normal(sql)) for kind, name, table, sql in memory.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master") if sql is not None}
    finally:
        memory.close()


def _normal(sql: str | None) -> str:
    return re.sub(r"\s+", " ", sql or "").strip()
