"""One socket per port and family for every listener on it that can share one (issue 21).

With a socket per listener, traffic spread over many groups of one port finds less than
one datagram per socket at each wake-up, and nothing batches. So the listeners of a port
share one socket (a PortSocket), bound to the wildcard address, with every listener's
memberships on it (each listener still joins and leaves its own, membership.py) and
IP(V6)_MULTICAST_ALL=0, so that it receives only the groups it joined. Each datagram's
pktinfo names the group it came to; the echo path dispatches it (or a batch's datagrams,
listener by listener) to that group's responder, whose policy, reply mode, identity and
counters apply exactly as on a socket of its own. A datagram to the port that is not to
one of its groups (unicast, say) is a *stray*: dropped, counted, never echoed.

A port's listeners share when there are two or more, every one of them can (``shares``)
and they agree on the socket-wide options (TTL, loopback, buffers): a ``share_port``
listener needs a group-bound socket that others may bind too, an IPv6 link-scope group one
bound to its interface, and either would conflict with the wildcard bind, as would the mesh's
group socket on its port.
Those ports keep a socket per listener, as do ports whose IPv4 memberships would not fit in
one socket (net.ipv4.igmp_max_memberships, net.core.optmem_max): the daemon logs which, and
the sysctl that would let them share.
A port with one listener keeps its group-bound socket. On a reload, a port whose listeners
have a socket each keeps them until a restart (the wildcard cannot bind beside them), and one
that shares keeps sharing; a reload that would make a sharing port stop (a ``share_port`` or
link-scope listener added to it) fails: restart the daemon for that.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence

from ..net import mcast
from ..net.ancillary import destination_key
from ..net.limits import MEMBERSHIP_BYTES, SOURCE_BYTES, KernelLimits, memberships_per_socket
from ..schema.keys import Config
from ..schema.listener import Listener
from . import echopath
from .ratelimit import RateLimitedLog
from .sendguard import SendWatch

if TYPE_CHECKING:
    from .responder import GroupResponder

log = logging.getLogger(__name__)

PortKey = tuple[bool, int]  # (ipv6, port)
SOCKET_OPTIONS = ("ttl", "loopback", "recv_buffer", "send_buffer")
TALLY_EVERY = 4096  # datagrams served as one batch that wait at most to be counted: see tally
STRAY_TEXT = ("datagram from %s:%d to port %d dropped: not to one of the groups joined on "
              "it (unicast to the port, say)")


def port_key(listener: Listener) -> PortKey:
    return (listener.ipv6, listener.port)


def shares(listener: Listener) -> bool:
    """Whether *listener* can use its port's shared socket (see the module doc)."""
    return not listener.share_port and not listener.link_scope


def sharing_ports(listeners: Iterable[Listener], limits: KernelLimits, interfaces: int = 1,
                  shared_now: Iterable[PortKey] = (),
                  taken: Iterable[PortKey] = (),
                  unshared_now: Iterable[PortKey] = ()) -> set[PortKey]:
    """The (ipv6, port) whose listeners share one socket: two or more listeners on the port,
    every one of them can, they agree on the socket's options, their memberships fit in one
    socket, and the port is not *taken* by another of the daemon's sockets bound to a group
    (the mesh's). A port with one listener keeps its group-bound socket (nothing to batch
    across; other programs may bind other groups of the port beside it, as before sharing).
    A port that could share but does not fit is logged with the sysctl to raise; one that
    shares already (*shared_now*, a reload) keeps sharing (a join that does not fit then
    waits, the errno's advice in STATUS: a port cannot stop sharing on a reload), and one
    whose listeners have a socket each (*unshared_now*, a reload) keeps that until a
    restart: its group-bound sockets leave no room for the wildcard bind."""
    shared_now, taken, unshared_now = set(shared_now), set(taken), set(unshared_now)
    by_port: dict[PortKey, list[Listener]] = {}
    for listener in listeners:
        by_port.setdefault(port_key(listener), []).append(listener)
    sharing = set()
    for key, on_port in by_port.items():
        options = {tuple(getattr(item, name) for name in SOCKET_OPTIONS) for item in on_port}
        if key in taken or len(on_port) < 2 or not all(map(shares, on_port)) \
                or len(options) > 1:
            continue
        if key in unshared_now:
            log.info("port %d (%s): %d listeners keep a socket each until the daemon restarts "
                     "(a running port cannot start sharing one)", key[1],
                     "IPv6" if key[0] else "IPv4", len(on_port))
            continue
        short = None if key in shared_now else _too_many(on_port, limits, interfaces)
        if short is None:
            sharing.add(key)
        elif len(on_port) > 1:
            log.warning("port %d (%s): %d listeners keep a socket each, so traffic spread "
                        "over their groups does not batch: %s", key[1],
                        "IPv6" if key[0] else "IPv4", len(on_port), short)
    return sharing


def mesh_ports(config: Config) -> set[PortKey]:
    """The port the mesh's group socket binds (an IPv4 group), if the config has a mesh."""
    return {(False, config.mesh.port)} if config.mesh is not None else set()


def _too_many(on_port: list[Listener], limits: KernelLimits, interfaces: int) -> Optional[str]:
    """Why these listeners' memberships do not fit in one socket (None if they do)."""
    memberships = [memberships_per_socket(item, interfaces) for item in on_port]
    needed = sum(memberships)
    if not on_port[0].ipv6 and limits.igmp_max_memberships is not None \
            and needed > limits.igmp_max_memberships:
        return (f"one socket would need {needed} IPv4 memberships, "
                f"net.ipv4.igmp_max_memberships is {limits.igmp_max_memberships} "
                f"(sysctl -w net.ipv4.igmp_max_memberships={needed})")
    optmem = sum(count * (MEMBERSHIP_BYTES + SOURCE_BYTES * len(item.sources or ()))
                 for count, item in zip(memberships, on_port))
    if limits.optmem_max is not None and optmem > limits.optmem_max:
        return (f"one socket would need {optmem} bytes of option memory, "
                f"net.core.optmem_max is {limits.optmem_max} "
                f"(sysctl -w net.core.optmem_max={optmem})")
    return None


class PortSocket:
    """The socket of one port's listeners: what the loop polls, and which listener each
    of its datagrams is for (``by_group``: destination key -> responder)."""

    def __init__(self, listener: Listener, path: echopath.EchoPath,
                 drop_log: RateLimitedLog) -> None:
        self.sock = mcast.open_port_socket(listener)
        self.key = port_key(listener)
        self.ipv6, self.port = self.key
        self.path = path
        self.drop_log = drop_log
        self.by_group: dict[object, GroupResponder] = {}
        self.send_watch = SendWatch()  # the send guard's state for the socket (sendguard.py)
        self.echoed = 0  # datagrams taken: when the send guard looks next in a burst
        self.strays = 0  # datagrams not to one of its groups, dropped
        self.recv_errors = 0
        # A batch served as one (batchpath.BatchEchoes._echo_alike): each datagram's
        # listener and length, received and echoed (or received only), not yet counted
        self._echoed: list = []
        self._echoed_lengths: list = []
        self._unsent: list = []
        self._unsent_lengths: list = []

    @staticmethod
    def group_key(listener: Listener) -> object:
        family = socket.AF_INET6 if listener.ipv6 else socket.AF_INET
        return destination_key(socket.inet_pton(family, listener.group))

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self, now: float) -> None:
        """Echo what is queued, up to one batch per wake-up (echopath.py)."""
        self.path.run_shared(self, now)

    def stray(self, count: int, peer: tuple) -> None:
        """Count *count* datagrams that are not to one of the socket's groups."""
        self.strays += count
        self.drop_log.log("stray", logging.WARNING, STRAY_TEXT, *peer[:2], self.port)

    def drop(self, reason: str, count: int, message: str, *args: object) -> None:
        """A receive failed: no listener's datagram, the socket's own count."""
        self.recv_errors += count
        self.drop_log.log(reason, logging.WARNING, message, *args)

    def tally(self, echoed: Sequence[GroupResponder], echoed_lengths: Sequence[int],
              unsent: Sequence[GroupResponder] = (), unsent_lengths: Sequence[int] = ()
              ) -> None:
        """Count a batch served as one: each datagram of *echoed* received and echoed, of
        *unsent* received only (its drop counted already), by its listener, with its length.
        Kept as lists (C-level appends) and added to the listeners' counters by count()
        every TALLY_EVERY datagrams, before each STATUS and at each round of membership
        checks (every 0.5 s): counting a listener at a time per batch, when traffic is
        spread over many groups, cost more than the rest of the echo (make bench)."""
        self._echoed += echoed
        self._echoed_lengths += echoed_lengths
        if unsent:
            self._unsent += unsent
            self._unsent_lengths += unsent_lengths
        if len(self._echoed) >= TALLY_EVERY:
            self.count()

    def count(self) -> None:
        """Add what tally() kept to the listeners' counters (on the loop: the only writer;
        a scrape's thread reads them at most TALLY_EVERY datagrams or 0.5 s late)."""
        if self._echoed:
            echoed = Counter(zip(self._echoed, self._echoed_lengths))
            self._echoed, self._echoed_lengths = [], []
            _add(echoed, True)
        if self._unsent:
            unsent = Counter(zip(self._unsent, self._unsent_lengths))
            self._unsent, self._unsent_lengths = [], []
            _add(unsent, False)


def _add(tallied: Counter, echoed: bool) -> None:
    """{(listener, length): datagrams} onto the listeners' received (and echoed) counters."""
    for (responder, length), datagrams in tallied.items():
        responder.received += datagrams
        responder.received_bytes += datagrams * length
        if echoed:
            responder.echoed += datagrams
            responder.echoed_bytes += datagrams * length


class PortSockets:
    """The daemon's port sockets, by (ipv6, port): opened by the first listener that comes
    (in a reload's thread too, hence the lock), closed when the last one goes.
    *closing* is called with a socket just before it closes (the loop unregisters it)."""

    def __init__(self, paths: echopath.Paths, drop_log: RateLimitedLog) -> None:
        self.paths = paths
        self.drop_log = drop_log
        self.sockets: dict[PortKey, PortSocket] = {}
        self.closing: Callable[[PortSocket], None] = lambda port_socket: None
        self._lock = threading.Lock()

    def attach(self, responder: GroupResponder) -> tuple[PortSocket, bool]:
        """The port socket of *responder*'s listener, with its group dispatched to it (and
        whether the socket was opened for it). OSError if it cannot be bound."""
        listener = responder.listener
        with self._lock:
            port_socket = self.sockets.get(port_key(listener))
            opened = port_socket is None
            if opened:
                port_socket = PortSocket(listener, self.paths.pick(listener), self.drop_log)
                self.sockets[port_socket.key] = port_socket
            port_socket.by_group[PortSocket.group_key(listener)] = responder
        return port_socket, opened

    def release(self, responder: GroupResponder, port_socket: PortSocket) -> None:
        """*responder* has left its memberships: its group is no longer dispatched, and
        the socket closes with its last listener."""
        key = PortSocket.group_key(responder.listener)
        with self._lock:
            if port_socket.by_group.get(key) is responder:
                del port_socket.by_group[key]
            if port_socket.by_group:
                return
            if self.sockets.get(port_socket.key) is port_socket:
                del self.sockets[port_socket.key]
        self.closing(port_socket)
        port_socket.sock.close()

    def count(self) -> None:
        """Every port socket's PortSocket.count (on the loop)."""
        for port_socket in list(self.sockets.values()):
            port_socket.count()

    def strays(self) -> int:
        return sum(s.strays for s in list(self.sockets.values()))

    def recv_errors(self) -> int:
        """Failed receives on the port sockets (a queued ICMP error, say): no listener's."""
        return sum(s.recv_errors for s in list(self.sockets.values()))

