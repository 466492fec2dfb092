"""Stored text made safe to print on a terminal.

Run names, reasons and config values come from users (or from a damaged
store). Printed raw, an escape sequence in them could clear the screen, move
the cursor over other lines, set the window title or reverse the text, so the
CLI passes every such value through `for_terminal` first."""

from __future__ import annotations

import re
import unicodedata

# ESC sequences as terminals read them: CSI (ESC [ ... final byte), OSC/DCS/PM/APC strings (ended by BEL
# or ESC \), and two-byte ESC X; then the 8-bit C1 forms of CSI and OSC.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?"
                      r"|\x9b[0-?]*[ -/]*[@-~]?|[\x90\x9d\x9e\x9f][^\x07\x1b\x9c]*[\x07\x9c]?", re.S)
# Bidirectional overrides and isolates reorder what follows them on screen ("Trojan source").
_BIDI = dict.fromkeys(map(ord, "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


def for_terminal(value) -> str:
    """`value` as one printable line: escape sequences removed, every other control
    character (CR, LF, tab, backspace, DEL, C1 controls) shown as a space."""
    text = _ESCAPES.sub("", str(value)).translate(_BIDI)
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
