"""Person names: what a gallery accepts as one."""
from __future__ import annotations

import unicodedata

from lafs_edge.errors import UserError

JOINERS = {"\u200c", "\u200d"}   # zero-width (non-)joiner: needed to write Persian, Indic, emoji


def check_name(name: str) -> str:
    """1-200 characters, none of them invisible: control characters, line separators and
    format characters such as the right-to-left override (U+202E) would let a name display as
    another one."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise UserError(f"invalid person name {name!r} (1-200 printable characters)")
    hidden = next((c for c in name if _invisible(c)), None)
    if hidden is not None:
        raise UserError(f"invalid person name {name!r}: U+{ord(hidden):04X} "
                        f"({unicodedata.name(hidden, 'a control character').lower()}) is "
                        "invisible or changes how the text around it is displayed")
    return name


def _invisible(character: str) -> bool:
    category = unicodedata.category(character)
    return category in ("Cc", "Cs", "Zl", "Zp") or (category == "Cf" and character not in JOINERS)
