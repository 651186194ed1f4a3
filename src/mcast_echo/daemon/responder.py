"""One group on one port: its socket, its membership, and the echo of every datagram.

A GroupResponder owns what it opens: ``close()`` leaves the group and closes
the socket, so shutdown is one walk over the responders. It joins when it can
and otherwise *waits*: a missing interface is a state with a reason (shown in
STATUS), retried with backoff by the daemon's loop, never a crash.
"""

from __future__ import annotations

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
from .policy import Policy
from .ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

# Join retries, capped at 1 s so a new interface is joined within ~1.5 s of appearing
# (the daemon looks every 0.5 s whether a retry is due).
RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.0)


class GroupResponder:
    def __init__(self, listener: Listener, hostname: str, drop_log: RateLimitedLog,
                 path: Optional[echopath.EchoPath] = None) -> None:
        self.listener = listener
        self.path = path or echopath.choose()
        self.policy = Policy(listener)
        self.hostname = hostname
        self.drop_log = drop_log
        self.sock: Optional[socket.socket] = None
        self.interface: Optional[mcast.Interface] = None  # set while joined
        self.waiting: Optional[str] = None  # why we are not joined, while not
        self.retry_at = 0.0
        self._retries = 0
        self.received = 0
        self.echoed = 0
        self.dropped: Counter[str] = Counter()

    # ---------------------------------------------------------------- set-up

    def open(self, limits: KernelLimits) -> None:
        """Create and bind the socket and log what buffers the kernel granted."""
        self.sock = mcast.open_socket(self.listener)
        self.log_buffers(limits)

    def log_buffers(self, limits: KernelLimits) -> None:
        assert self.sock is not None
        granted_recv, granted_send = mcast.granted_buffers(self.sock)
        for report in buffer_reports(self.listener.recv_buffer, self.listener.send_buffer,
                                     limits, granted_recv, granted_send):
            log.log(report.level, "%s:%d: %s", self.listener.group, self.listener.port,
                    report.message())

    @property
    def bound_to(self) -> tuple[str, int]:
        """What the socket is bound to: changing it takes a new socket."""
        return (self.listener.group, self.listener.port)

    def reconfigure(self, listener: Listener, limits: KernelLimits, now: float) -> None:
        """Apply a listener on the same group and port to this socket: options in place,
        and another interface by leaving and joining (a second socket could not bind
        while this one holds the port)."""
        assert (listener.group, listener.port) == self.bound_to
        old, self.listener = self.listener, listener
        if (old.allow, old.rate_limit) != (listener.allow, listener.rate_limit):
            self.policy = Policy(listener)
            self.policy.loopback_peers = self.interface is not None and self.interface.name == "lo"
        socket_options = ("ttl", "loopback", "recv_buffer", "send_buffer", "share_port")
        if self.sock is not None and any(getattr(old, name) != getattr(listener, name)
                                         for name in socket_options):
            mcast.apply_options(self.sock, listener, (limits.rmem_default, limits.wmem_default))
            self.log_buffers(limits)
        if old.interface != listener.interface and self.sock is not None:
            if self.interface is not None:
                name = self.interface.name
                if self._leave():
                    log.info("left %s on %s (interface changed)", listener.group, name)
            self.waiting = None
            self._retries = 0
            self.try_join(now)

    @property
    def joined(self) -> bool:
        return self.interface is not None

    @property
    def awaited(self) -> str:
        """What a waiting responder waits for, as log lines and STATUS name it."""
        return self.listener.interface or "a route to the group"

    def try_join(self, now: float) -> bool:
        """Join if we can; otherwise record why and when to try again."""
        assert self.sock is not None
        group = self.listener.group
        try:
            interface = mcast.resolve_interface(self.listener.interface, group)
            mcast.join(self.sock, group, interface)
        except mcast.InterfaceUnavailable as e:
            return self._wait(str(e), now)
        except OSError as e:
            return self._wait(mcast.join_error_text(e), now)
        self.interface = interface
        self.policy.loopback_peers = interface.name == "lo"
        self._retries = 0
        if self.waiting is not None:
            log.warning("joined %s on %s after waiting (%s)", group, interface.name, self.waiting)
        else:
            log.info("joined %s on %s (port %d)", group, interface.name, self.listener.port)
        self.waiting = None
        return True

    def _wait(self, reason: str, now: float) -> bool:
        if self.waiting != reason:
            log.warning("%s: waiting for %s (%s); retrying", self.listener.group, self.awaited,
                        reason)
        self.waiting = reason
        self.retry_at = now + RETRY_DELAYS[min(self._retries, len(RETRY_DELAYS) - 1)]
        self._retries += 1
        return False

    def check_membership(self, now: float) -> None:
        """Rejoin when the interface went away, came back, or changed its index."""
        if not self.joined:
            if now >= self.retry_at:
                self.try_join(now)
            return
        assert self.interface is not None
        try:
            current = mcast.resolve_interface(self.listener.interface, self.listener.group)
        except mcast.InterfaceUnavailable as e:
            log.warning("%s: lost %s (%s)", self.listener.group, self.interface.name, e)
            self._leave()
            self._wait(str(e), now)
            return
        if current.index != self.interface.index:
            log.warning("%s: %s changed (index %d -> %d); rejoining", self.listener.group,
                        current.name, self.interface.index, current.index)
            self._leave()
            self.try_join(now)

    def _leave(self) -> bool:
        """Drop the membership (already gone with its interface is fine); False on error."""
        assert self.sock is not None and self.interface is not None
        interface, self.interface = self.interface, None
        try:
            mcast.leave(self.sock, self.listener.group, interface)
        except OSError as e:
            log.error("leaving %s on %s failed: %s", self.listener.group, interface.name, e)
            return False
        return True

    def close(self) -> None:
        """Leave the group (logging it) and close the socket. Safe to call twice."""
        if self.sock is None:
            return
        if self.interface is not None:
            name = self.interface.name
            if self._leave():
                log.info("left %s on %s", self.listener.group, name)
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

    def arrival(self, ifindex: Optional[int], ttl: Optional[int]) -> probe.Arrival:
        ifname = mcast.interface_name(ifindex) if ifindex is not None else ""
        return probe.Arrival(self.hostname, ifname, self.listener.group, ttl, time.time_ns())

    # ---------------------------------------------------------------- reporting

    def status(self) -> str:
        where = f"{self.listener.group}:{self.listener.port}"
        if not self.joined:
            return f"{where} waiting for {self.awaited} ({self.waiting})"
        assert self.interface is not None
        dropped = sum(self.dropped.values())
        text = (f"{where} on {self.interface.name}: received {self.received}, "
                f"echoed {self.echoed}, dropped {dropped}")
        if dropped:
            text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) + ")"
        return text
