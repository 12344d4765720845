"""Person names: what a gallery accepts as one, and when two spellings are one person.

One rule in one place (the gallery store, the importer, enroll and the demo all call it):
- `check_name` refuses blank and invisible names and returns the display form: NFC, outer
  whitespace stripped, inner runs of spaces made one;
- `name_key` is what identifies a person: the display form casefolded, so "barack obama" is
  "Barack Obama" and "José" typed as NFD is "José" typed as NFC;
- `skeleton` maps look-alike letters (Cyrillic "а" for Latin "a") to one form, so a new name
  that only looks like an enrolled one can be warned about.
"""
from __future__ import annotations

import re
import unicodedata

from lafs_edge.errors import UserError

JOINERS = {"\u200c", "\u200d"}   # zero-width (non-)joiner: needed to write Persian, Indic, emoji
# Letters and symbols that draw nothing (the Hangul fillers, the blank Braille pattern), which
# Unicode does not put in a format or space category.
BLANK_CHARACTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u180e", "\u17b4",
                    "\u17b5"}
# Cyrillic and Greek letters drawn like Latin ones (Unicode's confusables, the common subset).
LOOK_ALIKES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "һ": "h",
    "ԛ": "q", "ԝ": "w", "ӏ": "l", "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v",
    "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ӕ": "ae", "0": "o", "1": "l",
})


def check_name(name: str) -> str:
    """1-200 characters after normalisation, at least one of them visible, none invisible:
    control characters, line separators, format characters such as the right-to-left override
    (U+202E) and blank letters (U+3164) would let a name display as another one or as nothing."""
    name = _display_form(name or "")
    if not name or len(name) > 200:
        raise UserError(f"invalid person name {name!r} (1-200 printable characters)")
    hidden = next((c for i, c in enumerate(name) if _invisible(name, i)), None)
    if hidden is not None:
        raise UserError(f"invalid person name {name!r}: U+{ord(hidden):04X} "
                        f"({unicodedata.name(hidden, 'a control character').lower()}) is "
                        "invisible or changes how the text around it is displayed")
    if not any(unicodedata.category(c)[0] in "LNPS" for c in name):
        raise UserError(f"invalid person name {name!r}: no visible letter, digit or symbol "
                        "(only combining marks or spaces)")
    return name


def name_key(name: str) -> str:
    """What identifies a person: two names with the same key are the same person. (Not
    checked: names stored by earlier versions must still be found.)"""
    return unicodedata.normalize("NFC", _display_form(name).casefold())


def skeleton(name: str) -> str:
    """The name with accents dropped and look-alike letters mapped to Latin: two different
    names with the same skeleton are easy to mistake for each other."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", _display_form(name).casefold())
                   if not unicodedata.combining(c))
    return bare.translate(LOOK_ALIKES)


def printable(text: object) -> str:
    """`text` for one line of output: control, format and separator characters (a newline in a
    file name would forge a result line; U+202E would reverse one) and the backslash are
    written as escapes, everything else as it is."""
    out = []
    for character in str(text):
        if character == "\\":
            out.append("\\\\")
        elif unicodedata.category(character) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            code = ord(character)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
        else:
            out.append(character)
    return "".join(out)


def _display_form(name: str) -> str:
    """NFC, outer whitespace stripped, inner runs of spaces made one (other separators stay,
    to be refused)."""
    return re.sub(" {2,}", " ", unicodedata.normalize("NFC", name).strip())


def _invisible(name: str, index: int) -> bool:
    character = name[index]
    if character in BLANK_CHARACTERS:
        return True
    if character in JOINERS:   # only between two letters of a script that needs it
        return not (0 < index < len(name) - 1
                    and _needs_joiner(name[index - 1]) and _needs_joiner(name[index + 1]))
    category = unicodedata.category(character)
    return category in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp", "Cf")


def _needs_joiner(character: str) -> bool:
    """Joiners shape Arabic-script, Indic and emoji sequences; next to Latin, Greek or Cyrillic
    letters (or spaces) they only hide."""
    if ord(character) < 0x0530 or character.isspace():
        return False
    return unicodedata.category(character)[0] in "LMS"
