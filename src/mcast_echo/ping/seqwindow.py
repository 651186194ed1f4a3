"""Which sequence numbers a responder already answered: a sliding bitmap of SEQ_WINDOW.

pinger.py keeps the send times of as many probes: an echo of an older one is late,
not matched."""

from __future__ import annotations

from typing import Optional

SEQ_WINDOW = 4096  # probes back that an echo is matched (send time) and told from a duplicate


class SeqWindow:
    """Which of the last SEQ_WINDOW sequence numbers were seen: a sliding bitmap.

    Its size is fixed however long the run: bit *n* of ``_bits`` stands for
    ``newest - n``.
    """

    __slots__ = ("newest", "_bits")
    _MASK = (1 << SEQ_WINDOW) - 1

    def __init__(self) -> None:
        self.newest = -1
        self._bits = 0

    def copy(self) -> SeqWindow:
        twin = SeqWindow()
        twin.newest, twin._bits = self.newest, self._bits
        return twin

    def mark(self, seq: int) -> Optional[bool]:
        """True the first time *seq* is marked, False after; None when it is older than
        the window (cannot tell, so never called a duplicate)."""
        if seq > self.newest:
            shift = seq - self.newest
            self._bits = ((self._bits << shift) | 1) & self._MASK if shift < SEQ_WINDOW else 1
            self.newest = seq
            return True
        age = self.newest - seq
        if age >= SEQ_WINDOW:
            return None
        if self._bits >> age & 1:
            return False
        self._bits |= 1 << age
        return True
