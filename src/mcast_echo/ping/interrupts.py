"""Ctrl-C and Ctrl-\\ during `mcast-echo ping`: recorded by the handlers, acted on by the loop.

A signal handler only sets a flag; the wakeup fd (``signal.set_wakeup_fd``) wakes the
selector of pinger.py's loop (or of session.py's wait), which then stops, or prints the
statistics so far, in its own time: logging or printing inside a handler can deadlock.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Optional


class Interrupts:
    """Ctrl-C and Ctrl-\\ only record the request; the wakeup fd wakes the loop, which acts."""

    def __init__(self) -> None:
        self.requested = False  # SIGINT: stop and print the summary
        self.interim = False  # SIGQUIT: print the statistics so far, go on
        self.wakeup: Optional[socket.socket] = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals go to the main thread only; nothing to arrange
        self.wakeup, self._writer = socket.socketpair()
        for end in (self.wakeup, self._writer):
            end.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno())
        self._old_handlers = {signum: signal.signal(signum, self._record)
                              for signum in (signal.SIGINT, signal.SIGQUIT)}
        return self

    def _record(self, signum: int, frame: object) -> None:
        if signum == signal.SIGQUIT:
            self.interim = True
        else:
            self.requested = True

    def drain(self) -> None:
        try:
            while self.wakeup is not None and self.wakeup.recv(64):
                pass
        except BlockingIOError:
            pass

    def __exit__(self, *exc: object) -> None:
        if self.wakeup is not None:
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(self._old_fd)
            self.wakeup.close()
            self._writer.close()
