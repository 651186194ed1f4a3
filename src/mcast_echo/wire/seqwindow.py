"""Which sequence numbers were already seen: a sliding bitmap of a fixed size.

ping/pinger.py matches echoes to the last SEQ_WINDOW probes it sent (an echo of an older
one is late, not matched); the daemon's mesh (daemon/meshpeers.py) tells a peer's repeated
probe or reply from a new one over a smaller window (MESH_WINDOW there).
"""

from __future__ import annotations

from typing import Optional

SEQ_WINDOW = 4096  # probes back that ping matches an echo (send time) and tells a duplicate


class SeqWindow:
    """Which of the last *size* sequence numbers were seen: a sliding bitmap.

    Its size is fixed however long the run: bit *n* of ``_bits`` stands for
    ``newest - n``.
    """

    __slots__ = ("newest", "size", "_bits", "_mask")

    def __init__(self, size: int = SEQ_WINDOW) -> None:
        self.newest = -1
        self.size = size
        self._bits = 0
        self._mask = (1 << size) - 1

    def copy(self) -> SeqWindow:
        twin = SeqWindow(self.size)
        twin.newest, twin._bits = self.newest, self._bits
        return twin

    def mark(self, seq: int) -> Optional[bool]:
        """True the first time *seq* is marked, False after; None when it is older than
        the window (cannot tell, so never called a duplicate)."""
        if seq > self.newest:
            shift = seq - self.newest
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self.newest = seq
            return True
        age = self.newest - seq
        if age >= self.size:
            return None
        if self._bits >> age & 1:
            return False
        self._bits |= 1 << age
        return True
