"""One peer can never take the echo away from the others: echoes to an address whose
neighbour (ARP / IPv6 ND) does not resolve are held back before they fill the send buffer.

Why: an echo to an on-link address waits in the kernel's neighbour queue until the
address resolves, and while it waits it stays charged to the listener socket's send
buffer. A forged source that no host holds never resolves, and its queue (up to
net.ipv4.neigh.*.unres_qlen_bytes, 208 KiB by default -- the size of a default send
buffer) keeps the buffer full: every other client's echo then fails with EAGAIN.
Measured before this guard: 1,000 probes/s of 16 B from one forged source left a
legitimate client 37 of 300 echoes, none once the buffer was full; with it, 300 of 300
(tests/test_starvation.py; the ssmping listener alike).

How, at no cost per datagram in the common case:
- Each socket's outstanding send bytes (SIOCOUTQ, one ioctl) are read at most every
  CHECK_INTERVAL while it echoes, after every CHECK_EVERY echoes (a burst: the rate
  limit lets 2,000 through at once, and one batch of them could fill the buffer before
  a timer fires), and at once after a send fails (EAGAIN, ENOBUFS). An echo whose
  address resolves leaves the buffer within microseconds, so a buffer more than
  1/PRESSURE full means echoes are waiting.
- Only then is the neighbour table read (one rtnetlink dump, net/neigh.py, at most every
  INVESTIGATE_INTERVAL per family). Every address in it that does not resolve is held
  back: its echoes are dropped (reason "unresolved") -- for SHORT_HOLD while it has been
  trying for less than MIN_AGE (a real host answers within milliseconds and is let go
  when the hold ends), for PENALTY once its resolution failed or took longer, renewed
  while it stays so. What it already parked the kernel frees when the resolution fails
  (~3 s).
- The table holds at most MAX_TRACKED addresses per family (the kernel's own default
  bound on its neighbour table, gc_thresh3); the oldest entry makes room.

The echo paths test their batch against ``unresolved(ipv6)`` (a dict keyed like
policy.py's sources: IPv4 the raw integer of the four address bytes, IPv6 the integer
of the sixteen) with one C-level operation, and only while it is non-empty.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import socket
import struct

from ..net import neigh
from .policy import raw_address

log = logging.getLogger("mcast_echo.responder")

SIOCOUTQ = 0x5411  # = TIOCOUTQ: bytes not yet freed by the stack (queued or in flight)
CHECK_INTERVAL = 0.02  # seconds between two looks at one busy socket's send queue
SIZE_INTERVAL = 1.0  # seconds between two reads of its size (set at start and by a reload)
CHECK_EVERY = 32  # echoes between two looks, for a burst (the fast path looks per batch)
PRESSURE = 16  # a send queue above 1/16 of the send buffer: find out who waits
INVESTIGATE_INTERVAL = 0.01  # seconds between two neighbour-table reads, per family
MIN_AGE = 0.05  # seconds an address may try to resolve before it is held back for long
SHORT_HOLD = 0.1  # seconds a younger unresolved address is held back (its ARP/ND goes on)
PENALTY = 10.0  # seconds an unresolved address stays held back, unless seen so again
MAX_TRACKED = 1024  # addresses held back per family
NO_NETLINK = frozenset({errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EPERM, errno.EACCES})
_DEFAULT_SNDBUF = 212992  # net.core.wmem_default's usual value, until the socket is read
_INT = struct.Struct("=i")  # SIOCOUTQ's answer
_INT_ROOM = bytes(_INT.size)  # its buffer (immutable: ioctl returns a new bytes)


class SendWatch:
    """The guard's state for one socket, kept by the socket's owner (a responder, an ssmping
    socket): when to look at its send queue next, and how full is too full."""

    __slots__ = ("check_at", "check_echoed", "pressure", "size_at")

    def __init__(self) -> None:
        self.check_at = 0.0  # time of the next look; 0 after a failed send: look now
        self.check_echoed = CHECK_EVERY  # or when the owner's echo count reaches this
        self.pressure = _DEFAULT_SNDBUF // PRESSURE  # queued bytes that start an investigation
        self.size_at = 0.0  # time of the next read of the send buffer's size


class SendGuard:
    """The daemon's held-back addresses (one table per family) and how they are found."""

    def __init__(self) -> None:
        self._unresolved: dict[bool, dict[int, float]] = {False: {}, True: {}}  # key -> until
        self._investigated: dict[bool, float] = {False: -1.0, True: -1.0}
        self._next_expiry = 0.0
        self._unreadable = False  # the neighbour table cannot be read here: warned once

    def unresolved(self, ipv6: bool) -> dict[int, float]:
        """The held-back addresses of one family (see the module doc for the keys)."""
        return self._unresolved[ipv6]

    def check(self, sock: socket.socket, watch: SendWatch, ipv6: bool, now: float) -> None:
        """The periodic look (the caller's when ``now >= watch.check_at``): expired holds,
        the send buffer's size (every SIZE_INTERVAL: only a reload changes it), then as
        look()."""
        watch.check_at = now + CHECK_INTERVAL
        if now >= self._next_expiry:
            self._expire(now)
        if now >= watch.size_at:
            try:
                watch.pressure = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // PRESSURE
            except OSError:  # a socket closed under us; nothing to guard
                return
            watch.size_at = now + SIZE_INTERVAL
        self._look(sock, watch.pressure, ipv6, now)

    def look(self, sock: socket.socket, watch: SendWatch, echoed: int, ipv6: bool,
             now: float) -> None:
        """The look after a burst (the caller's when its echo count *echoed* reaches
        ``watch.check_echoed``): one ioctl, and the neighbour table if the queue is full."""
        watch.check_echoed = echoed + CHECK_EVERY
        self._look(sock, watch.pressure, ipv6, now)

    def _look(self, sock: socket.socket, pressure: int, ipv6: bool, now: float) -> None:
        try:
            queued = _INT.unpack(fcntl.ioctl(sock.fileno(), SIOCOUTQ, _INT_ROOM))[0]
        except OSError:  # a socket closed under us
            return
        if (queued >= pressure and now - self._investigated[ipv6] >= INVESTIGATE_INTERVAL
                and not self._unreadable):
            self._investigated[ipv6] = now
            self._investigate(ipv6, now)

    def _investigate(self, ipv6: bool, now: float) -> None:
        try:
            entries = neigh.unresolved(socket.AF_INET6 if ipv6 else socket.AF_INET)
        except OSError as e:
            if e.errno not in NO_NETLINK:
                log.debug("send guard: reading the neighbour table failed: %s", e)
                return  # this once: the next look tries again
            self._unreadable = True
            log.warning("send guard off: cannot read the neighbour table (%s); an unresolved "
                        "source can fill the send buffers. Allow netlink (the unit's "
                        "RestrictAddressFamilies needs AF_NETLINK)", e.strerror or e)
            return
        table = self._unresolved[ipv6]
        for entry in entries:
            key = _key(entry.address)
            until = now + (PENALTY if entry.failed or entry.age >= MIN_AGE else SHORT_HOLD)
            until = max(until, table.pop(key, until))  # re-inserted: the newest, last out
            if len(table) >= MAX_TRACKED:
                del table[next(iter(table))]
            table[key] = until

    def _expire(self, now: float) -> None:
        self._next_expiry = now + SHORT_HOLD
        for table in self._unresolved.values():
            for key in [key for key, until in table.items() if until <= now]:
                del table[key]


def source_key(address: str) -> int:
    """The key of a source as recvmsg gives it (text; an IPv6 one may carry a %scope)."""
    if ":" in address:
        return _key(socket.inet_pton(socket.AF_INET6, address.partition("%")[0]))
    return raw_address(address)


def _key(packed: bytes) -> int:
    """As policy.py keys a source: IPv4 the native integer of its four bytes, IPv6 the
    big-endian integer of its sixteen."""
    if len(packed) == 4:
        return struct.unpack("=I", packed)[0]
    return int.from_bytes(packed, "big")
