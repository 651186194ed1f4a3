"""The memberships of one listener's socket: join what is wanted, leave what is not, wait.

A listener is joined on one interface (named, by address, or the route to its
group) or, with ``interface: all``, on every up, multicast-capable interface,
followed as interfaces come and go. ``sync`` brings the joined set to what is
wanted right now: an interface that went away (or came back with another index)
is left, a new one joined. Whatever cannot be joined is a wait reason -- shown
in STATUS, retried -- never a crash; the interfaces that are joined keep
serving meanwhile. A refused join is retried with backoff; a missing interface
(or route) at every round of checks, since the round looks at the interfaces
once for every listener anyway: an interface that is re-created is joined at
the next round (#18.9). Until its first sync a listener's join is *pending*
(a reload's new listeners are joined a slice at a time after the switch).
"""

from __future__ import annotations

import logging
import socket
from typing import Optional

from ..net import mcast
from ..net.errnoadvice import join_error_text
from ..schema.listener import ALL_INTERFACES, Listener
from .ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

# Retries of a refused join, capped at 1 s (the daemon looks every 0.5 s whether one is due).
RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.0)
NO_INTERFACE = "no interface is up and multicast-capable"


class Memberships:
    def __init__(self, interface_log: RateLimitedLog) -> None:
        """*interface_log*: the daemon's throttle for the lines an interface coming or
        going writes for every ``interface: all`` listener (a host can make many)."""
        self.joined: dict[int, mcast.Interface] = {}  # interface index -> where
        self.waiting: Optional[str] = None  # why something wanted is not joined
        self.pending = True  # not synced yet: the join is still to be tried
        self.retry_at = 0.0
        self._retries = 0
        self.join_failures = 0  # failed join attempts, retries included (for the metrics)
        self._interface_log = interface_log

    @staticmethod
    def awaited(listener: Listener) -> str:
        """What a waiting listener waits for, as log lines and STATUS name it."""
        if listener.interface == ALL_INTERFACES:
            return "interfaces"
        return listener.interface or "a route to the group"

    def due(self, now: float) -> bool:
        """Whether a sync is due: always while all is well (to notice changes), else
        when the backoff says so."""
        return self.waiting is None or now >= self.retry_at

    def sync(self, sock: socket.socket, listener: Listener, now: float,
             interfaces: mcast.InterfaceSnapshot) -> bool:
        """Join and leave so that the joined set is what *listener* wants now; returns
        whether anything changed."""
        group = listener.group
        self.pending = False
        every = listener.interface == ALL_INTERFACES
        try:
            wanted = {i.index: i for i in interfaces.resolve(listener)}
        except mcast.InterfaceUnavailable as e:
            changed = bool(self.joined)
            for interface in list(self.joined.values()):
                log.warning("%s: lost %s (%s)", group, interface.name, e)
                self._leave(sock, listener, interface)
            self.wait(listener, str(e), now, backoff=False)
            return changed
        changed = False
        for index, interface in list(self.joined.items()):
            current = wanted.get(index)
            if current is None or current.name != interface.name:
                if listener.interface not in (None, ALL_INTERFACES) and len(wanted) == 1:
                    (new,) = wanted.values()
                    log.warning("%s: %s changed (index %d -> %d); rejoining", group,
                                new.name, index, new.index)
                elif every:
                    self._interface_log.log(f"lost {interface.name}", logging.WARNING,
                                            "%s: lost %s", group, interface.name)
                else:
                    log.warning("%s: lost %s", group, interface.name)
                self._leave(sock, listener, interface)
                changed = True
        problem = None if wanted else NO_INTERFACE
        for index, interface in wanted.items():
            if index in self.joined:
                continue
            try:
                mcast.join(sock, listener, interface)
            except OSError as e:
                self.join_failures += 1
                problem = problem or (f"{join_error_text(e)}" if len(wanted) == 1
                                      else f"{interface.name}: {join_error_text(e)}")
                continue
            self.joined[index] = interface
            changed = True
            if every:
                self._interface_log.log(f"joined {interface.name}", logging.INFO,
                                        "joined %s on %s (port %d)", group, interface.name,
                                        listener.port)
            elif self.waiting is not None:
                log.warning("joined %s on %s after waiting (%s)", group, interface.name,
                            self.waiting)
            else:
                log.info("joined %s on %s (port %d)", group, interface.name, listener.port)
        if problem is None:
            self.waiting = None
            self._retries = 0
        else:
            self.wait(listener, problem, now, backoff=problem != NO_INTERFACE)
        return changed

    def wait(self, listener: Listener, reason: str, now: float, backoff: bool = False) -> None:
        """Wait for *reason* to pass (logged when the reason changes): with *backoff*, a
        refused join is retried after RETRY_DELAYS; without, a missing interface at the
        next round of checks."""
        self.pending = False  # tried: it waits now, for a reason STATUS shows
        if self.waiting != reason:
            if listener.interface == ALL_INTERFACES:
                self._interface_log.log(f"waiting {reason}", logging.WARNING,
                                        "%s: waiting for %s (%s); retrying", listener.group,
                                        self.awaited(listener), reason)
            else:
                log.warning("%s: waiting for %s (%s); retrying", listener.group,
                            self.awaited(listener), reason)
        self.waiting = reason
        if backoff:
            self.retry_at = now + RETRY_DELAYS[min(self._retries, len(RETRY_DELAYS) - 1)]
            self._retries += 1
        else:
            self.retry_at = now

    def _leave(self, sock: socket.socket, listener: Listener,
               interface: mcast.Interface) -> bool:
        """Drop one membership (already gone with its interface is fine); False on error."""
        self.joined.pop(interface.index, None)
        try:
            mcast.leave(sock, listener, interface)
        except OSError as e:
            log.error("leaving %s on %s failed: %s", listener.group, interface.name, e)
            return False
        return True

    def leave_all(self, sock: socket.socket, listener: Listener, why: str = "") -> None:
        """Leave every membership, logging each ("left G on eth0")."""
        for interface in list(self.joined.values()):
            if self._leave(sock, listener, interface):
                log.info("left %s on %s%s", listener.group, interface.name, why)
        self.waiting = None
        self._retries = 0

    def names(self) -> str:
        return ", ".join(i.name for i in self.joined.values())
