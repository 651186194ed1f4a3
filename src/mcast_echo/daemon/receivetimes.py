"""The kernel's receive time of a probe on the fast path: its residence time's T2.

Every datagram could carry its receive time (SO_TIMESTAMPNS), but a control message
on every receive costs the fast path ~3 % of its CPU per echo (measured with make
bench) where only probes need it. So a socket's datagrams carry their own time only
while probes come to it -- from its first probe until STAMP_HOLD after its last --
and a probe that finds them off takes its batch's time (mcast.last_receive_ns, that of
the batch's last datagram): its own when it came alone, as the first probe of a ping
or a probe timer's lone probe does; a later one in a larger batch, so that its
residence time can only come out shorter and the RTT a client shows longer, never
shorter.
"""

from __future__ import annotations

import socket
from typing import Optional

from ..net import mcast

STAMP_HOLD = 30.0  # s after a socket's last probe that its datagrams still carry their time


class ReceiveTimes:
    """Which sockets' datagrams carry their receive time, and until when (monotonic)."""

    def __init__(self) -> None:
        self.until: dict[socket.socket, float] = {}
        self.due = float("inf")  # expire() when now reaches it (one compare per wake-up)

    def of_batch(self, sock: socket.socket) -> Optional[int]:
        """The kernel's receive time of the last datagram read from *sock*; None if none,
        or while its datagrams carry their own (the kernel then leaves the batch's stale)."""
        if sock in self.until:
            return None
        return mcast.last_receive_ns(sock.fileno())

    def keep(self, sock: socket.socket, now: float) -> None:
        """A probe came to *sock*: its datagrams carry their time until STAMP_HOLD from now."""
        if sock not in self.until:
            try:
                mcast.stamp_each_datagram(sock, True)
            except OSError:  # closed under us by a reload: nothing to stamp
                return
        self.until[sock] = now + STAMP_HOLD
        self.due = min(self.due, now + STAMP_HOLD)

    def expire(self, now: float) -> None:
        """Turn the time off on the sockets whose last probe is STAMP_HOLD old."""
        for sock, until in list(self.until.items()):
            if until <= now:
                del self.until[sock]
                try:
                    mcast.stamp_each_datagram(sock, False)
                except OSError:  # closed by a reload meanwhile
                    pass
        self.due = min(self.until.values(), default=float("inf"))
