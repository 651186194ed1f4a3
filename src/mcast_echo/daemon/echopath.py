"""Which echo path serves a listener: the fast one where it can, the plain one else.

See echosink.py for the contract both paths keep.
"""

from __future__ import annotations

import logging
import os
from typing import Union

from ..net import mmsg
from ..schema.listener import Listener
from .batchpath4 import BatchPath
from .batchpath6 import BatchPath6
from .plainpath import PlainPath
from .sendguard import SendGuard

log = logging.getLogger("mcast_echo.responder")

ENV = "MCAST_ECHO_ECHO_PATH"
CHOICES = ("auto", "fast", "plain")

EchoPath = Union[PlainPath, BatchPath, BatchPath6]


def choose(guard: SendGuard) -> Union[PlainPath, tuple[BatchPath, BatchPath6]]:
    """The echo path $MCAST_ECHO_ECHO_PATH asks for (auto, fast, plain; unset: auto): the
    plain path, or the fast one's two families.

    auto takes the fast path where recvmmsg/sendmmsg load; fast insists (OSError if
    it cannot load); plain is the portable loop. *guard*: the daemon's send guard.
    """
    wanted = (os.environ.get(ENV) or "auto").strip().lower()
    if wanted not in CHOICES:
        log.warning("%s=%r is not one of %s; using auto", ENV, wanted[:20], ", ".join(CHOICES))
        wanted = "auto"
    if wanted == "plain" or (wanted == "auto" and not mmsg.load()):
        return PlainPath(guard)
    return BatchPath(guard), BatchPath6(guard)


class Paths:
    """The daemon's echo paths, shared by its responders: a path runs one batch at a
    time, so one set of buffers serves every socket of its family. The fast path serves
    every listener, IPv4 and IPv6, in every reply mode; the plain one is the fallback
    where recvmmsg/sendmmsg cannot load (or MCAST_ECHO_ECHO_PATH=plain). All hold back
    the same unresolved addresses (one SendGuard, which the ssmping listener shares too)."""

    def __init__(self) -> None:
        self.guard = SendGuard()
        chosen = choose(self.guard)
        self.fast: EchoPath
        self.fast6: EchoPath
        if isinstance(chosen, PlainPath):
            self.fast = self.fast6 = chosen
        else:
            self.fast, self.fast6 = chosen

    @property
    def name(self) -> str:
        """What the journal says at start (`echo path: ...`)."""
        if isinstance(self.fast, PlainPath):
            return self.fast.name
        return f"{self.fast.name}: IPv4 and IPv6, every reply mode"

    def pick(self, listener: Listener) -> EchoPath:
        return self.fast6 if listener.ipv6 else self.fast
