"""Text for a terminal: control characters from models, tools or other actors shown escaped."""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls (0x80-0x9f: CSI, OSC, ... in one byte),
# and the Unicode bidirectional overrides that reorder what a line appears to say.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\r": "\\r", "\x1b": "\\x1b", "\x0b": "\\v", "\x0c": "\\f", "\x08": "\\b", "\x00": "\\0"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def printable(text: object, *, newlines: bool = True) -> str:
    """`text` as a string safe to print at a terminal: ESC, OSC, C0 and C1 controls and bidi
    overrides shown escaped (`\\x1b`, `\\x9b`, `\\u202e`); newlines kept when `newlines`
    (multi-line text), else shown as `\\n`. Tabs are kept."""
    s = text if isinstance(text, str) else str(text)
    if not newlines:
        s = s.replace("\n", "\\n")
    return _CONTROL.sub(_escape, s)


def printable_tree(value: object) -> object:
    """A copy of `value` (dicts, lists) with every string, keys included, made `printable`:
    for views that print fields of trace events."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_tree(v) for v in value]
    return value
