"""What an echo path needs from the responder it serves, and what both paths share.

Two paths implement one contract, ``run(sock, responder, now) -> int`` (datagrams
taken off the socket; 0 when its queue is empty): batchpath.BatchPath (recvmmsg /
sendmmsg, IPv4 unicast replies) and plainpath.PlainPath (recvmsg / sendto: IPv6,
the group reply modes, and the portable fallback); echopath.py picks them.

Both apply the same rules in the same order: a source that cannot be a real peer,
then 'allow' (and an SSM listener's 'sources'), then a datagram the kernel cut or
that is over max_datagram, then the rate limit; then a probe that asks gets its
identity trailer (probe.py), never making the echo larger, and its residence time:
the kernel's receive time (SO_TIMESTAMPNS, read only for probes that ask) to the clock
read just before the send that carries the echo. Nothing a peer sends can raise out of
a path.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Optional, Protocol

from ..schema import Listener
from ..wire import probe
from .policy import Policy
from .residence import ResidenceHistogram

log = logging.getLogger("mcast_echo.responder")

MSG_TRUNC = int(socket.MSG_TRUNC)  # an int: `flags & socket.MSG_TRUNC` runs enum code
PROBE_MAGIC_WORD = struct.unpack("=I", probe.PROBE_MAGIC)[0]

DROP_TEXT = {
    "source": "datagram from %s:%d dropped: source cannot be a real peer (0.0.0.0/8, "
              "127.0.0.0/8 off lo, multicast, broadcast; ::, ::1 off lo, ff00::/8)",
    "ssm": "datagram from %s:%d dropped: source not in the listener's SSM 'sources'",
    "acl": "datagram from %s:%d dropped: source not in 'allow'",
    "rate": "datagram from %s:%d dropped: source over its 'rate_limit'",
    "truncated": "datagram from %s:%d cut by the kernel; dropped",
}


class EchoSink(Protocol):
    """What a path needs from the responder whose socket it serves."""

    listener: Listener
    policy: Policy
    received: int
    echoed: int
    received_bytes: int
    echoed_bytes: int
    residence: ResidenceHistogram

    def drop(self, reason: str, count: int, message: str, *args: object) -> None: ...

    def arrival(self, ifindex: Optional[int], ttl: Optional[int],
                received_ns: int) -> probe.Arrival: ...
