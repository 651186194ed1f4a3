"""One group on one port: its socket, its membership, and the echo of every datagram.

A GroupResponder owns what it opens: ``close()`` leaves the group and closes
the socket -- or, on a port whose listeners share one socket (sharedsocket.py), gives
its group back to that socket, which closes with its last listener -- so shutdown is
one walk over the responders. It joins when it can
and otherwise *waits*: a missing interface is a state with a reason (shown in
STATUS), retried with backoff by the daemon's loop, never a crash.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from typing import Optional

from ..net import mcast
from ..net.limits import KernelLimits, buffer_reports
from ..net.udpstats import socket_drops
from ..schema.listener import Listener
from ..wire import probe
from . import echopath
from .delayed import DelayedReplies
from .membership import Memberships
from .policy import Policy
from .ratelimit import RateLimitedLog
from .residence import ResidenceHistogram
from .sendguard import SendWatch
from .sharedsocket import PortSocket, PortSockets

log = logging.getLogger(__name__)


def listener_policy(listener: Listener, tracked_sources: int) -> Policy:
    """The checks of *listener*'s datagrams (policy.py), with its share of the daemon's
    bound on rate-limited sources."""
    return Policy(listener.ipv6, listener.allow, listener.rate_limit, listener.sources,
                  tracked_sources)


class GroupResponder:
    def __init__(self, listener: Listener, hostname: str, drop_log: RateLimitedLog,
                 paths: echopath.Paths, interface_log: RateLimitedLog, tracked_sources: int,
                 delayed: DelayedReplies, ports: Optional[PortSockets] = None) -> None:
        """*tracked_sources*: this listener's share of the daemon's bound on rate-limited
        sources (policy.share_sources; the daemon sets it again when listeners change).
        *ports*: the daemon's port sockets, if this listener's port shares one."""
        self.listener = listener
        self.ports = ports
        self.port_socket: Optional[PortSocket] = None  # the shared one, once open()
        self.bound_to = socket_key(listener, ports is not None)  # see socket_key
        self.paths = paths
        self.path = self.paths.pick(listener)
        self.tracked_sources = tracked_sources
        self.policy = listener_policy(listener, tracked_sources)
        self.batch_profile: Optional[str] = None  # see _profile
        self._profile()
        self.hostname = hostname
        self.drop_log = drop_log
        self.sock: Optional[socket.socket] = None  # None: closed, or waiting to bind (open())
        self.closed = False  # close() was called: never bind again (a late link-scope bind)
        self.limits: Optional[KernelLimits] = None
        self.memberships = Memberships(interface_log)
        self.received = 0  # datagrams, and their bytes (metrics read these when scraped)
        self.echoed = 0
        self.received_bytes = 0
        self.echoed_bytes = 0
        self.send_watch = SendWatch()  # the send guard's state for the socket (sendguard.py)
        self.dropped: Counter[str] = Counter()
        self.residence = ResidenceHistogram()  # how long probes stayed (residence.py)
        # echoes held for a probe's --spread: the daemon's one heap, which its loop sends
        self.delayed = delayed

    # ---------------------------------------------------------------- set-up

    def open(self, limits: KernelLimits, now: float) -> None:
        """Create and bind the socket and log what buffers the kernel granted.

        An IPv6 link-scope group is bound with its interface's index as scope: while that
        interface is absent there is no socket yet and the listener waits for it, as an
        IPv4 listener's membership does; sync() binds the socket when it appears."""
        self.limits = limits
        if self.ports is not None:
            self.port_socket, opened = self.ports.attach(self)
            self.sock = self.port_socket.sock
            self.send_watch = self.port_socket.send_watch  # one socket, one send queue
            if opened:
                self.log_buffers(limits)
            return
        scope = 0
        if self.listener.link_scope:
            try:
                scope = mcast.resolve_interface(self.listener.interface,
                                                self.listener.group).index
            except mcast.InterfaceUnavailable as e:
                self.memberships.wait(self.listener, str(e), now)
                return
        self._bind(scope)

    def _bind(self, scope: int) -> None:
        assert self.limits is not None
        self.sock = mcast.open_socket(self.listener, scope)
        self.log_buffers(self.limits)

    def _bind_late(self, now: float, interfaces: mcast.InterfaceSnapshot) -> bool:
        """Bind the socket of a link-scope listener whose interface has appeared; False
        while it still waits (a bind that fails now is a wait reason too, not a crash)."""
        if not self.memberships.due(now):
            return False
        try:
            (interface,) = interfaces.resolve(self.listener)
            self._bind(interface.index)
        except mcast.InterfaceUnavailable as e:
            self.memberships.wait(self.listener, str(e), now)
            return False
        except OSError as e:
            self.memberships.wait(self.listener, f"cannot bind: {e.strerror or e}", now)
            return False
        log.info("%s: %s is here: socket bound", self.listener.where, interface.name)
        return True

    def log_buffers(self, limits: KernelLimits) -> None:
        assert self.sock is not None
        granted_recv, granted_send = mcast.granted_buffers(self.sock)
        for report in buffer_reports(self.listener.recv_buffer, self.listener.send_buffer,
                                     limits, granted_recv, granted_send):
            log.log(report.level, "%s: %s", self.listener.where, report.message())

    def reconfigure(self, listener: Listener, limits: KernelLimits, now: float,
                    interfaces: mcast.InterfaceSnapshot) -> None:
        """Apply a listener on the same group and port to this socket: options in place,
        and another interface or other sources by leaving and joining (a second socket
        could not bind while this one holds the port)."""
        old, self.listener = self.listener, listener
        self.limits = limits
        self.path = self.paths.pick(listener)
        if (old.allow, old.rate_limit, old.sources) != (listener.allow, listener.rate_limit,
                                                       listener.sources):
            self.policy = listener_policy(listener, self.tracked_sources)
            self._loopback_peers()
        self._profile()
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
        """Join and leave as the interfaces now are (a link-scope listener still without
        its socket binds it first); whether anything changed."""
        if self.sock is None and not self._bind_late(now, interfaces):
            return False
        assert self.sock is not None
        changed = self.memberships.sync(self.sock, self.listener, now, interfaces)
        if changed:
            self._loopback_peers()
        return changed

    def _loopback_peers(self) -> None:
        self.policy.loopback_peers = any(i.name == "lo"
                                         for i in self.memberships.joined.values())
        self._profile()

    def _profile(self) -> None:
        """What the listeners of a port socket whose datagrams share a batch must have alike
        for the batch to be checked and sent as one (batchpath.BatchEchoes._echo_alike):
        unicast replies, no SSM sources, the same 'allow', rate limit (each its own
        buckets), max_datagram and loopback peers. None: served a listener at a time."""
        listener = self.listener
        # a string: its hash is computed once (a batch's are compared as a set)
        self.batch_profile = None if listener.reply != "unicast" or listener.sources \
            is not None else repr((self.policy.networks, listener.rate_limit,
                                   listener.max_datagram, self.policy.loopback_peers))

    def check_membership(self, now: float, interfaces: mcast.InterfaceSnapshot) -> bool:
        """Follow the interfaces: rejoin one that came back or changed, join a new one
        (``interface: all``), leave one that went away. Whether anything changed."""
        if self.closed or not self.memberships.due(now):
            return False
        return self.sync(now, interfaces)

    def close(self) -> None:
        """Leave the group (logging it) and close the socket. Safe to call twice."""
        self.closed = True
        if self.sock is None:
            return
        self.delayed.forget(self)  # its held echoes would go out of a closed socket
        self.memberships.leave_all(self.sock, self.listener)
        if self.ports is not None and self.port_socket is not None:
            self.ports.release(self, self.port_socket)  # closed with its last listener
        else:
            self.sock.close()
        self.sock = None

    # ---------------------------------------------------------------- the echo

    @property
    def reader(self) -> GroupResponder | PortSocket:
        """What the loop polls for this listener's datagrams: itself, or its port socket."""
        return self.port_socket if self.port_socket is not None else self

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def on_readable(self, now: float) -> None:
        """Echo what is queued, up to one batch per wake-up (echopath.py); *now*: when the
        loop woke (monotonic)."""
        if self.sock is not None:
            self.path.run(self.sock, self, now)

    def drop(self, reason: str, count: int, message: str, *args: object) -> None:
        """Count *count* datagrams dropped for *reason*; log one line (rate-limited)."""
        self.dropped[reason] += count
        self.drop_log.log(reason, logging.WARNING, message, *args)

    def arrival(self, ifindex: Optional[int], ttl: Optional[int],
                received_ns: int) -> probe.Arrival:
        ifname = mcast.interface_name(ifindex) if ifindex is not None else ""
        return probe.Arrival(self.hostname, ifname, self.listener.group, ttl, received_ns,
                             self.listener.reply != "unicast")

    # ---------------------------------------------------------------- reporting

    def kernel_drops(self) -> Optional[int]:
        """Datagrams the kernel dropped for the socket, its receive buffer full (udpstats.py);
        None if closed or unknown. A socket that the port's listeners share counts its drops
        for each of them (the kernel does not say which group a dropped datagram was for).
        A system call: for STATUS and scrapes, never per datagram."""
        sock = self.sock  # a reload may close it meanwhile (a scrape runs in its own thread)
        return None if sock is None else socket_drops(sock)

    def status(self) -> str:
        where = self.listener.where
        memberships = self.memberships
        if memberships.pending:
            return f"{where} join pending (on {memberships.awaited(self.listener)})"
        if not memberships.joined:
            return (f"{where} waiting for {memberships.awaited(self.listener)} "
                    f"({memberships.waiting})")
        dropped = sum(self.dropped.values())
        text = (f"{where} on {memberships.names()}: received {self.received}, "
                f"echoed {self.echoed}, dropped {dropped}")
        if dropped:
            text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) + ")"
        kernel_drops = self.kernel_drops()
        if kernel_drops:  # shown once the kernel has lost any: then it is news
            text += f", kernel drops {kernel_drops}"
        if memberships.waiting:
            text += f"; waiting for {memberships.waiting}"
        residence = self.residence.status()
        if residence:
            text += f"; {residence}"
        return text


def socket_key(listener: Listener,
               shared: bool) -> tuple[str, int, Optional[str], bool]:
    """What a listener's socket is bound to: changing it takes a new socket (an IPv6
    link-scope group is bound to its interface too; *shared*: its port's socket)."""
    return (listener.group, listener.port, listener.interface if listener.link_scope else None,
            shared)
