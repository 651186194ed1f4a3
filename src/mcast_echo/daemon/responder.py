"""One group on one port: its socket, its membership, and the echo of every datagram.

A GroupResponder owns what it opens: ``close()`` leaves the group and closes
the socket, so shutdown is one walk over the responders. It joins when it can
and otherwise *waits*: a missing interface is a state with a reason (shown in
STATUS), retried with backoff by the daemon's loop, never a crash.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import Counter
from typing import Optional

from ..net import mcast
from ..net.limits import KernelLimits, buffer_reports
from ..schema import Listener
from ..wire import probe
from . import echopath
from .delayed import DelayedReplies
from .membership import Memberships
from .policy import Policy
from .ratelimit import RateLimitedLog
from .residence import ResidenceHistogram

log = logging.getLogger(__name__)

class GroupResponder:
    def __init__(self, listener: Listener, hostname: str, drop_log: RateLimitedLog,
                 paths: Optional[echopath.Paths] = None,
                 delayed: Optional[DelayedReplies] = None) -> None:
        self.listener = listener
        self.paths = paths or echopath.Paths()
        self.path = self.paths.pick(listener)
        self.policy = Policy(listener)
        self.hostname = hostname
        self.drop_log = drop_log
        self.sock: Optional[socket.socket] = None
        self.memberships = Memberships()
        self.received = 0  # datagrams, and their bytes (metrics read these when scraped)
        self.echoed = 0
        self.received_bytes = 0
        self.echoed_bytes = 0
        self.dropped: Counter[str] = Counter()
        self.residence = ResidenceHistogram()  # how long probes stayed (residence.py)
        # echoes held for a probe's --spread: the daemon's one heap, which its loop sends
        self.delayed = delayed if delayed is not None else DelayedReplies()

    # ---------------------------------------------------------------- set-up

    def open(self, limits: KernelLimits) -> None:
        """Create and bind the socket and log what buffers the kernel granted.

        An IPv6 link-scope group is bound with its interface's index as scope, so
        that interface must be there now (OSError otherwise)."""
        scope = 0
        if self.listener.link_scope:
            try:
                scope = mcast.resolve_interface(self.listener.interface,
                                                self.listener.group).index
            except mcast.InterfaceUnavailable as e:
                raise OSError(errno.ENODEV, f"{self.listener.interface}: {e}") from None
        self.sock = mcast.open_socket(self.listener, scope)
        self.log_buffers(limits)

    def log_buffers(self, limits: KernelLimits) -> None:
        assert self.sock is not None
        granted_recv, granted_send = mcast.granted_buffers(self.sock)
        for report in buffer_reports(self.listener.recv_buffer, self.listener.send_buffer,
                                     limits, granted_recv, granted_send):
            log.log(report.level, "%s: %s", self.listener.where, report.message())

    @property
    def bound_to(self) -> tuple[str, int, Optional[str]]:
        """What the socket is bound to: changing it takes a new socket (an IPv6 link-scope
        group is bound to its interface too)."""
        return socket_key(self.listener)

    def reconfigure(self, listener: Listener, limits: KernelLimits, now: float,
                    interfaces: mcast.InterfaceSnapshot) -> None:
        """Apply a listener on the same group and port to this socket: options in place,
        and another interface or other sources by leaving and joining (a second socket
        could not bind while this one holds the port)."""
        assert socket_key(listener) == self.bound_to
        old, self.listener = self.listener, listener
        self.path = self.paths.pick(listener)
        if (old.allow, old.rate_limit, old.sources) != (listener.allow, listener.rate_limit,
                                                       listener.sources):
            self.policy = Policy(listener)
            self._loopback_peers()
        socket_options = ("ttl", "loopback", "recv_buffer", "send_buffer", "share_port")
        if self.sock is not None and any(getattr(old, name) != getattr(listener, name)
                                         for name in socket_options):
            mcast.apply_options(self.sock, listener, (limits.rmem_default, limits.wmem_default))
            self.log_buffers(limits)
        if (old.interface, old.sources) != (listener.interface, listener.sources) \
                and self.sock is not None:
            why = " (interface changed)" if old.interface != listener.interface \
                else " (sources changed)"
            self.memberships.leave_all(self.sock, old, why)
            self.sync(now, interfaces)

    @property
    def joined(self) -> bool:
        return bool(self.memberships.joined)

    def sync(self, now: float, interfaces: mcast.InterfaceSnapshot) -> bool:
        """Join and leave as the interfaces now are; whether anything changed."""
        assert self.sock is not None
        changed = self.memberships.sync(self.sock, self.listener, now, interfaces)
        if changed:
            self._loopback_peers()
        return changed

    def _loopback_peers(self) -> None:
        self.policy.loopback_peers = any(i.name == "lo"
                                         for i in self.memberships.joined.values())

    def check_membership(self, now: float, interfaces: mcast.InterfaceSnapshot) -> bool:
        """Follow the interfaces: rejoin one that came back or changed, join a new one
        (``interface: all``), leave one that went away. Whether anything changed."""
        if self.sock is None or not self.memberships.due(now):
            return False
        return self.sync(now, interfaces)

    def close(self) -> None:
        """Leave the group (logging it) and close the socket. Safe to call twice."""
        if self.sock is None:
            return
        self.delayed.forget(self)  # its held echoes would go out of a closed socket
        self.memberships.leave_all(self.sock, self.listener)
        self.sock.close()
        self.sock = None

    # ---------------------------------------------------------------- the echo

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def on_readable(self) -> None:
        """Echo what is queued, up to one batch per wake-up (echopath.py)."""
        if self.sock is not None:
            self.path.run(self.sock, self, time.monotonic())

    def drop(self, reason: str, count: int, message: str, *args: object) -> None:
        """Count *count* datagrams dropped for *reason*; log one line (rate-limited)."""
        self.dropped[reason] += count
        self.drop_log.log(reason, logging.WARNING, message, *args)

    def arrival(self, ifindex: Optional[int], ttl: Optional[int],
                received_ns: int) -> probe.Arrival:
        ifname = mcast.interface_name(ifindex) if ifindex is not None else ""
        return probe.Arrival(self.hostname, ifname, self.listener.group, ttl, received_ns)

    # ---------------------------------------------------------------- reporting

    def status(self) -> str:
        where = self.listener.where
        memberships = self.memberships
        if not memberships.joined:
            return (f"{where} waiting for {memberships.awaited(self.listener)} "
                    f"({memberships.waiting})")
        dropped = sum(self.dropped.values())
        text = (f"{where} on {memberships.names()}: received {self.received}, "
                f"echoed {self.echoed}, dropped {dropped}")
        if dropped:
            text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) + ")"
        if memberships.waiting:
            text += f"; waiting for {memberships.waiting}"
        residence = self.residence.status()
        if residence:
            text += f"; {residence}"
        return text


def socket_key(listener: Listener) -> tuple[str, int, Optional[str]]:
    """What a listener's socket is bound to (see GroupResponder.bound_to)."""
    return (listener.group, listener.port, listener.interface if listener.link_scope else None)
