"""The session a dialect opens before its requests: RFC 6450's Init and Server Response.

``open_session`` sends the dialect's session request from the run's socket, waits for
the answer, and tries again (``Dialect.session_tries``, each waiting
``session_wait``); -w bounds it all. The dialect reads each datagram: the response that
names the group and the Session ID opens the session, one that offers no group ends the
run (``SessionRefused``, exit status 2). mcast-echo and ssmping have no session.
"""

from __future__ import annotations

import selectors
import socket
import time

from ..wire.seqwindow import SEQ_WINDOW
from .dialect import Dialect
from .interrupts import Interrupts
from .settings import PingError, Settings


def open_session(sock: socket.socket, dialect: Dialect, settings: Settings,
                 source_pktinfo: list, destination: tuple, interrupts: Interrupts,
                 started: float) -> bool:
    """Send *dialect*'s session request to *destination* (with -S's *source_pktinfo*)
    until the answer opens the session: True. False when the responder never answered,
    Ctrl-C came, or -w (counted from *started*) ran out; the report then says so."""
    hard_end = started + settings.deadline if settings.deadline else None
    wait = dialect.session_wait(settings)
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        for _try in range(dialect.session_tries):
            if interrupts.requested:
                break
            try:
                sock.sendmsg([dialect.session_request()], source_pktinfo, 0, destination)
            except OSError as err:
                raise PingError(dialect.explain(err, settings)) from None
            end = time.monotonic() + wait
            if hard_end is not None:
                end = min(end, hard_end)
            while time.monotonic() < end and not interrupts.requested:
                if (selector.select(max(0.0, end - time.monotonic()))
                        and _response(sock, dialect, settings.host or "")):
                    return True
            if hard_end is not None and time.monotonic() >= hard_end:
                break
    return False


def _response(sock: socket.socket, dialect: Dialect, host: str) -> bool:
    """Read what is waiting; True once it held the response that opens the session."""
    for _ in range(SEQ_WINDOW):
        try:
            data, _ancdata, _flags, _source = sock.recvmsg(65535, 0, socket.MSG_DONTWAIT)
        except OSError:  # nothing more, or an ICMP error (port unreachable): go on
            return False
        if dialect.session_response(data, host):
            return True
    return False
