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
    """The daemon's echo paths, one of each, shared by its responders: a path runs one
    batch at a time, so one set of buffers serves every socket of its family. The fast
    path serves IPv4 and IPv6 listeners that reply by unicast; the group reply modes
    take the plain one. All hold back the same unresolved addresses (one SendGuard,
    which the ssmping listener shares too)."""

    def __init__(self) -> None:
        self.guard = SendGuard()
        chosen = choose(self.guard)
        if isinstance(chosen, PlainPath):
            self.plain = chosen
            self.fast: EchoPath = chosen
            self.fast6: EchoPath = chosen
        else:
            self.fast, self.fast6 = chosen
            self.plain = PlainPath(self.guard)

    @property
    def name(self) -> str:
        if self.fast is self.plain:
            return self.plain.name
        return f"{self.fast.name}; group replies: {self.plain.name}"

    def pick(self, listener: Listener) -> EchoPath:
        if listener.reply != "unicast":
            return self.plain
        return self.fast6 if listener.ipv6 else self.fast
