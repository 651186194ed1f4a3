"""Responders' host names from reverse lookups, looked up off the probe loop.

A lookup can take seconds (a resolver that does not answer), and any group member
can answer from thousands of addresses: so lookups run on one worker thread, at
most MAX_LOOKUPS per run. The loop waits for a new responder's name a little
(FIRST_WAIT, at most WAIT_BUDGET in all per run: a hosts file or a resolver that
answers is quicker), else the name shows once it is known; the summary waits up
to SUMMARY_WAIT for those under way.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Callable, Optional

MAX_LOOKUPS = 64  # distinct addresses looked up per run; the rest stay numeric
SUMMARY_WAIT = 1.0  # seconds the summary waits for lookups under way
FIRST_WAIT = 0.05  # seconds the loop waits for a new responder's name
WAIT_BUDGET = 0.5  # seconds the loop waits for names in all, per run


def reverse_lookup(address: str) -> Optional[str]:
    """The name of *address* (hosts file, DNS), None when it has none."""
    try:
        name, _port = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
    except (OSError, UnicodeError):
        return None
    return name if name != address.split("%")[0] else None


class Names:
    """Address -> host name, filled by a worker thread; ``numeric`` looks nothing up."""

    def __init__(self, numeric: bool, lookup: Callable[[str], Optional[str]] = reverse_lookup,
                 limit: int = MAX_LOOKUPS) -> None:
        self.numeric = numeric
        self._lookup = lookup
        self._limit = limit
        self._names: dict[str, Optional[str]] = {}  # written by the worker only
        self._asked: set[str] = set()
        self._queue: queue.Queue[str] = queue.Queue()
        self._done = threading.Condition()
        self._worker: Optional[threading.Thread] = None
        self._budget = WAIT_BUDGET

    def name(self, address: str, wait: float = 0.0) -> Optional[str]:
        """The name of *address* if known by now; asks for it the first time, and then
        waits up to *wait* seconds for it (within the run's WAIT_BUDGET)."""
        if self.numeric:
            return None
        if address not in self._asked and len(self._asked) < self._limit:
            self._asked.add(address)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="names", daemon=True)
                self._worker.start()
            self._queue.put(address)
            started = time.monotonic()
            with self._done:
                self._done.wait_for(lambda: address in self._names, min(wait, self._budget))
            self._budget -= time.monotonic() - started
        return self._names.get(address)

    def _work(self) -> None:
        while True:
            address = self._queue.get()
            name = self._lookup(address)
            with self._done:
                self._names[address] = name
                self._done.notify_all()

    def settle(self, timeout: float = SUMMARY_WAIT) -> None:
        """Wait up to *timeout* seconds for the lookups asked for so far."""
        if self._worker is not None:
            with self._done:
                self._done.wait_for(lambda: len(self._names) >= len(self._asked), timeout)
