"""What an echo path needs from the responder it serves, and what both paths share.

Two paths implement one contract, ``run(sock, responder, now) -> int`` (datagrams
taken off the socket; 0 when its queue is empty) and ``run_shared(port_socket, now)``
for a socket that several listeners of one port share (sharedsocket.py: each datagram
served as the listener of the group its pktinfo names): the batched one (recvmmsg /
sendmmsg: batchpath4.BatchPath for IPv4, batchpath6.BatchPath6 for IPv6, unicast
replies) and plainpath.PlainPath (recvmsg / sendto: the group reply modes, and the
portable fallback); echopath.py picks them.

Both apply the same rules in the same order (policy.py): a source that cannot be a
real peer (port 0 included), then one of this host's own addresses arriving from the
network, then 'allow' (and an SSM listener's 'sources'), then a datagram the kernel
cut or that is over max_datagram, then the rate limit, then an address the send guard
holds back (sendguard.py: it does not resolve); then a probe that asks gets its
identity trailer (probe.py), never making the echo larger, and its residence time:
the kernel's receive time (SIOCGSTAMPNS on the plain path; on the fast path
receivetimes.py) to the clock read just before the send that carries the echo.
Nothing a peer sends can raise out of a path.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from typing import Optional, Protocol, Sequence

from ..net import ancillary
from ..schema.listener import Listener
from ..wire import probe
from .policy import Policy
from .residence import ResidenceHistogram
from .sendguard import SendWatch

log = logging.getLogger("mcast_echo.responder")

MSG_TRUNC = int(socket.MSG_TRUNC)  # an int: `flags & socket.MSG_TRUNC` runs enum code
PROBE_MAGIC_WORD = struct.unpack("=I", probe.PROBE_MAGIC)[0]

# Every reason a datagram is counted as dropped and not echoed: the one list, in the order
# /metrics shows them, each from 0 at the start (so `increase(...) > 0` sees the first drop)
# for every listener and the ssmping listener. A new reason is one line here.
DROP_REASONS = (
    "source",  # cannot be a real peer (policy.py)
    "own-address",  # one of this host's own addresses, arriving from the network: forged
    "ssm",  # not one of an SSM listener's 'sources'
    "acl",  # not in 'allow'
    "rate",  # over its 'rate_limit'
    "truncated",  # cut by the kernel (plain path)
    "size",  # over 'max_datagram'
    "loop",  # another responder's group echo, not echoed to the group again
    "recv-error",  # the receive failed (e.g. a queued ICMP error)
    "unresolved",  # its address does not resolve: held back by the send guard (sendguard.py)
    "send-error",  # the echo could not be sent (ENOBUFS, EAGAIN, ECONNREFUSED, EPERM)
)

DROP_TEXT = {
    "source": "datagram from %s:%d dropped: source cannot be a real peer (port 0, 0.0.0.0/8, "
              "127.0.0.0/8 off lo, multicast, broadcast; ::, ::1 off lo, ff00::/8)",
    "own-address": "datagram from %s:%d dropped: its source is an address of this host but "
                   "it came in from the network, so it is forged (or this host's own probe, "
                   "which looks the same: probe over lo, or from another host)",
    "ssm": "datagram from %s:%d dropped: source not in the listener's SSM 'sources'",
    "acl": "datagram from %s:%d dropped: source not in 'allow'",
    "rate": "datagram from %s:%d dropped: source over its 'rate_limit'",
    "truncated": "datagram from %s:%d cut by the kernel; dropped",
    "loop": "datagram from %s:%d came from the group's port: not echoed to the group",
    "unresolved": "echo to %s:%d held back: the address does not resolve (ARP/ND), and echoes "
                  "waiting on it would fill the send buffer (see sendguard.py)",
}


# Where an echo goes: (address, interface index for a group echo, else None), one or two.
Destinations = tuple[tuple[tuple, Optional[int]], ...]


class Delays(Protocol):
    """Where a path hands an echo that a probe's --spread delays (delayed.DelayedReplies)."""

    def hold(self, spread_ms: int, sock: socket.socket, responder: EchoSink, data: bytes,
             destinations: Destinations, received_ns: Optional[int]) -> bool: ...


class EchoSink(Protocol):
    """What a path needs from the responder whose socket it serves."""

    listener: Listener
    policy: Policy
    received: int
    echoed: int
    received_bytes: int
    echoed_bytes: int
    send_watch: SendWatch  # when the send guard looks at the socket's send queue next
    residence: ResidenceHistogram
    delayed: Delays  # echoes held for a probe's --spread (delayed.DelayedReplies)
    sock: Optional[socket.socket]

    def drop(self, reason: str, count: int, message: str, *args: object) -> None: ...

    def arrival(self, ifindex: Optional[int], ttl: Optional[int],
                received_ns: int) -> probe.Arrival: ...


class PortReader(Protocol):
    """What a path's run_shared needs of a port socket (sharedsocket.PortSocket)."""

    sock: socket.socket
    ipv6: bool
    by_group: dict  # destination key (ancillary.destination_key) -> its listener's sink
    send_watch: SendWatch  # the socket's, which its listeners' sinks share
    echoed: int  # datagrams taken: what the send guard's burst look counts

    def stray(self, count: int, peer: tuple) -> None: ...

    def tally(self, echoed: Sequence[EchoSink], echoed_lengths: Sequence[int],
              unsent: Sequence[EchoSink] = (), unsent_lengths: Sequence[int] = ()) -> None: ...

    def drop(self, reason: str, count: int, message: str, *args: object) -> None: ...


def send_echo(sock: socket.socket, data: bytes, address: tuple, ifindex: Optional[int],
              responder: EchoSink, received_ns: Optional[int] = None) -> bool:
    """One echo out; a failure (ENOBUFS, EAGAIN, ECONNREFUSED, EPERM) is counted, not raised.
    With *ifindex*, an IPv4 group echo leaves by the interface the datagram came in on.
    With *received_ns*, the echo's residence time is stamped here, just before the send
    (the plain path's echoes, and the ones held for --spread)."""
    residence_ns = None
    if received_ns is not None:
        data, residence_ns = probe.stamp_residence(data, received_ns)
    try:
        if ifindex and len(address) == 2:
            sock.sendmsg([data], [(socket.IPPROTO_IP, ancillary.IP_PKTINFO,
                                   struct.pack("=i4s4s", ifindex, bytes(4), bytes(4)))],
                          0, address)
        else:
            sock.sendto(data, address)
    except OSError as e:
        send_failed(responder, address, e)
        return False
    if residence_ns is not None:
        responder.residence.observe(residence_ns)
    return True


def send_failed(responder: EchoSink, address: tuple, error: OSError) -> None:
    """Count an echo that could not be sent (send_echo's, and the plain path's own sendto)."""
    responder.send_watch.check_at = 0.0  # EAGAIN, ENOBUFS: look at the send queue now
    responder.drop("send-error", 1, "echo to %s:%d failed: %s", *address[:2],
                   errno.errorcode.get(error.errno or 0, error))


def destinations(listener: Listener, source: tuple,
                  ifindex: Optional[int]) -> Destinations:
    """Where a probe's held echo goes (delayed.py), in the order the paths send them."""
    to_sender = ((source, None),) if listener.reply != "group" else ()
    if listener.reply == "unicast":
        return to_sender
    return (*to_sender, (group_address(listener, source, ifindex), ifindex))


def group_address(listener: Listener, source: tuple, ifindex: Optional[int]) -> tuple:
    """Where a group echo goes: the group, on the sender's port (as ssmping does, so
    that responders on the group's port never see it), out of the arrival interface."""
    if listener.ipv6:
        return (listener.group, source[1], 0, ifindex or 0)
    return (listener.group, source[1])
