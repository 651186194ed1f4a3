"""SIGTERM, SIGINT and SIGHUP, recorded for the main loop (service.py) to act on.

A handler only records, and only state (a flag), so a storm of signals is bounded
work; what the loop makes of the flags is service.py's. ``signal.set_wakeup_fd`` writes
a byte to a pipe the loop's poller watches, so a signal wakes the loop; the reload
thread wakes it through the same pipe (reloader.py).
"""

from __future__ import annotations

import os
import signal
from typing import Any, Optional


class RecordedSignals:
    """The flags the handlers set, and the wakeup pipe; owns the pipe (close())."""

    def __init__(self) -> None:
        """Open the pipe and install the handlers. They stay installed until the process
        exits: a second SIGTERM while we leave the groups is recorded and ignored, not
        fatal half-way through."""
        self.stop: Optional[int] = None  # SIGTERM/SIGINT received: leave and exit
        self.reload_pending = False  # SIGHUP(s) received since the last reload began
        self.read_end, self.write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._record)
        signal.set_wakeup_fd(self.write_end, warn_on_full_buffer=False)

    def _record(self, signum: int, frame: Any) -> None:
        # Only record, and only state (a flag), so a storm of signals is bounded work.
        if signum == signal.SIGHUP:
            self.reload_pending = True
        elif self.stop is None:
            self.stop = signum

    def close(self) -> None:
        """Stop writing to the pipe, and close it (the handlers stay)."""
        signal.set_wakeup_fd(-1)
        os.close(self.read_end)
        os.close(self.write_end)


def drain(fd: int) -> None:
    """Read the wakeup pipe *fd* empty."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
