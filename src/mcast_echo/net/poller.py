"""Wait for readable descriptors: epoll directly, since the loop runs once per batch.

``selectors`` builds a key and a list of tuples on every call; under a flood the
daemon's loop wakes tens of thousands of times a second, so the few microseconds
matter (see make bench). Each registered descriptor maps to the object the loop
hands back when it is readable.
"""

from __future__ import annotations

import select
from typing import Any, Optional


class Poller:
    def __init__(self) -> None:
        self._epoll: Optional[select.epoll] = select.epoll()
        self._targets: dict[int, Any] = {}

    def register(self, fd: int, target: Any) -> None:
        """Poll *fd* for *target* (again for the same one: nothing to do)."""
        assert self._epoll is not None
        if fd in self._targets and self._targets[fd] is target:
            return  # (a target may be None: the signals' wake-up pipe)
        self._epoll.register(fd, select.EPOLLIN)
        self._targets[fd] = target

    def unregister(self, fd: int) -> None:
        """Stop polling *fd* (one never registered: nothing to do)."""
        assert self._epoll is not None
        if fd in self._targets:
            del self._targets[fd]
            self._epoll.unregister(fd)

    def wait(self, timeout: float) -> list[Any]:
        """The targets of the descriptors that are readable, waiting up to *timeout* s."""
        assert self._epoll is not None
        targets = self._targets
        return [targets[fd] for fd, _ in self._epoll.poll(max(timeout, 0.0))]

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
