"""Text as `mcast-echo ping` shows it: a peer's text made safe for a terminal, a count
with its noun."""

from __future__ import annotations

from typing import Optional


def shown(text: str) -> str:
    """Text a peer sent, made safe for a terminal: printable characters only.

    Anything a terminal acts on (C0 and C1 controls, ESC, DEL, line breaks, NUL) and
    anything invisible (format characters such as U+202E, odd separators) becomes a
    visible escape like ``\\x1b`` or ``\\u202e``; a backslash is doubled, so a peer
    cannot pass its own text off as one of our escapes. JSON output keeps the raw text.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escaped(char) for char in text)


_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def plural(count: int, noun: str, nouns: Optional[str] = None) -> str:
    """`1 probe`, `2 probes`: the summary's grammar, as ping's."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
