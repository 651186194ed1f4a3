"""Multicast sockets: create, join, leave.

One function per step, as python-zeroconf does: open a socket bound to the
group, resolve the interface(s), add and drop a membership. IPv4 and IPv6,
any-source (ASM) and source-specific (SSM) groups: an SSM membership is one
(source, group) join per listed source (MCAST_JOIN_SOURCE_GROUP, both
families). ``add_membership`` / ``drop_membership`` take a group and an interface
index (the client joins with them); ``join`` / ``leave`` take a configured Listener.
What a join's errno means to the operator is net/errnoadvice.py's; the responder
waits and retries: a join error is never fatal.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import socket
import struct
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from ..schema.listener import ALL_INTERFACES, Listener
from . import ifaddr
from .ancillary import SO_TIMESTAMPNS, TIMESPEC_SIZE, ask_for_arrival, timespec_ns
from .errnoadvice import ROUTE_FIX, ROUTE_FIX_IPV6

# Python 3.11 lacks the constant; it is 49 in linux/in.h. With it off, a socket
# bound to a port receives only the groups *it* joined, never another group
# some other process joined on the same port.
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
# linux/in6.h and linux/in.h: the IPv6 twin, and the family-independent group calls.
IPV6_MULTICAST_ALL = 29
MCAST_JOIN_SOURCE_GROUP = 46
MCAST_LEAVE_SOURCE_GROUP = 47


# The kernel's receive time of the last datagram read from a socket (sock_ioctl: a timespec).
SIOCGSTAMPNS = 0x8907


def enable_receive_stamps(sock: socket.socket) -> None:
    """Have the kernel keep the receive time of the datagram *sock* read last (for
    last_receive_ns), without a control message per datagram: SO_TIMESTAMPNS on every
    receive costs the fast path ~3 % of its CPU per echo (measured), where only a probe
    needs its time (see stamp_each_datagram). The first SIOCGSTAMPNS turns the stamps
    on (and fails ENOENT: nothing was read yet)."""
    last_receive_ns(sock.fileno())


def stamp_each_datagram(sock: socket.socket, on: bool) -> None:
    """SO_TIMESTAMPNS: each datagram read carries its kernel receive time in a control
    message (what a batch of several needs; last_receive_ns gives the last one's)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, int(on))


def last_receive_ns(fd: int) -> Optional[int]:
    """The kernel's receive time (CLOCK_REALTIME, ns) of the last datagram read from *fd*
    (after a recvmmsg: the last of its batch), None if there is none."""
    try:
        return timespec_ns(fcntl.ioctl(fd, SIOCGSTAMPNS, bytes(TIMESPEC_SIZE)))
    except OSError:
        return None


BENIGN_LEAVE_ERRORS = frozenset({errno.EADDRNOTAVAIL, errno.ENODEV, errno.EINVAL})


class InterfaceUnavailable(Exception):
    """The interface to join on is not there (yet); the daemon waits and retries."""


@dataclass(frozen=True)
class Interface:
    """Where a membership lives: the interface's index, and the address named, if any."""

    index: int
    address: str  # "0.0.0.0" unless the config named the interface by an IPv4 address
    name: str  # what the operator calls it, for log lines



def family(listener: Listener) -> int:
    return socket.AF_INET6 if listener.ipv6 else socket.AF_INET


class InterfaceSnapshot:
    """The interfaces as they are at one moment: each lookup is made once per round of
    membership checks, however many listeners name the same interface. A route lookup
    is one connect() per group; the address it leaves from is looked up (a walk over
    every address of the host) once per round, however many groups route the same way."""

    def __init__(self) -> None:
        self._found: dict[tuple[Optional[str], str], Union[Interface, InterfaceUnavailable]] = {}
        self._all: Optional[list[Interface]] = None
        self._holders: dict[str, Optional[int]] = {}  # address -> index of its interface

    def resolve(self, listener: Listener) -> list[Interface]:
        """Where *listener* is to be joined: one interface, or for ``interface: all``
        each up, multicast-capable one (lo only if named). InterfaceUnavailable if a
        named one is not there."""
        if listener.interface == ALL_INTERFACES:
            if self._all is None:
                self._all = [Interface(index, "0.0.0.0", name)
                             for index, name in ifaddr.multicast_interfaces()]
            return self._all
        key = (listener.interface, listener.group if listener.interface is None else "")
        found = self._found.get(key)
        if found is None:
            try:
                found = resolve_interface(listener.interface, listener.group, self.holder)
            except InterfaceUnavailable as e:
                found = e
            self._found[key] = found
        if isinstance(found, InterfaceUnavailable):
            raise found
        return [found]

    def holder(self, address: str) -> Optional[int]:
        """ifaddr.index_of_address, once per address per round."""
        if address not in self._holders:
            self._holders[address] = ifaddr.index_of_address(address)
        return self._holders[address]


def resolve_interface(spec: Optional[str], group: str,
                      holder: Callable[[str], Optional[int]] = ifaddr.index_of_address
                      ) -> Interface:
    """The interface named in the config (or the route to *group*), as it is right now;
    *holder* finds the interface that holds an address."""
    if spec is None:
        return _route_interface(group, holder)
    if _is_address(spec):
        index = holder(spec)
        if index is None:
            raise InterfaceUnavailable(f"no interface has address {spec}")
        return Interface(index, spec if ":" not in spec else "0.0.0.0", interface_name(index))
    try:
        return Interface(socket.if_nametoindex(spec), "0.0.0.0", spec)
    except OSError:
        raise InterfaceUnavailable("no such device") from None


def _route_interface(group: str, holder: Callable[[str], Optional[int]]) -> Interface:
    """The interface the kernel's routing table picks for *group*.

    Joining by that index is what INADDR_ANY would do, but we can then name it
    in every log line ("left 224.3.29.71 on eth0").
    """
    ipv6 = ":" in group
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((group, 9))  # no packet is sent: connect only routes
            source = probe.getsockname()[0]
        except OSError:
            fix = ROUTE_FIX_IPV6 if ipv6 else ROUTE_FIX
            raise InterfaceUnavailable(f"no route to {group}: {fix} "
                                       "or set 'interface'") from None
    if source in ("0.0.0.0", "::"):
        raise InterfaceUnavailable(
            f"the route to {group} has no source address (a route via lo, say): give it "
            f"one (ip route replace 224.0.0.0/4 dev lo src 127.0.0.1) or set 'interface'")
    index = holder(source)
    if index is None:
        raise InterfaceUnavailable(f"the route to {group} leaves from {source}, "
                                   "which no interface holds")
    return Interface(index, "0.0.0.0", interface_name(index))


def _is_address(text: str) -> bool:
    for family_ in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family_, text)
            return True
        except OSError:
            continue
    return False


def interface_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


def open_socket(listener: Listener, scope: int = 0) -> socket.socket:
    """A non-blocking UDP socket bound to (group, port) that sees only that group.

    Binding to the group address (not the wildcard) keeps unicast and other groups
    on the same port out; IP(V6)_MULTICAST_ALL=0 keeps out groups that other sockets
    joined. SO_REUSEADDR only with ``share_port``: otherwise a second responder
    on the same group and port (which would double every echo) fails to bind.
    *scope* is the interface index an IPv6 link-scope group must be bound with.
    The socket of a listener that cannot share its port's (daemon/sharedsocket.py).
    """
    return _bound(listener, listener.group, scope)


def open_port_socket(listener: Listener) -> socket.socket:
    """A non-blocking UDP socket bound to the wildcard address on *listener*'s port, of
    its family, with its options, that sees only the groups it joins itself
    (IP(V6)_MULTICAST_ALL=0): the one socket of every listener on that port that can
    share it (daemon/sharedsocket.py). Each datagram's pktinfo says which group it came
    to; unicast to the port comes in too, and is dropped by the reader. Without
    SO_REUSEADDR nothing else can bind the port (group:port or the wildcard) while it is
    open, as a group-bound socket refuses a second responder on its group."""
    return _bound(listener, "::" if listener.ipv6 else "0.0.0.0", 0)


def _bound(listener: Listener, address: str, scope: int) -> socket.socket:
    ipv6 = listener.ipv6
    sock = socket.socket(family(listener), socket.SOCK_DGRAM)
    try:
        if ipv6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        # Ancillary data for the probe trailer: arrival interface and TTL / hop limit (and
        # the destination, which tells a port socket's groups apart).
        ask_for_arrival(sock, ipv6)
        # The kernel's receive time: a probe's residence time starts there (wire/probe.py).
        enable_receive_stamps(sock)
        apply_options(sock, listener)
        sock.bind((address, listener.port, 0, scope) if ipv6 else (address, listener.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def apply_options(sock: socket.socket, listener: Listener,
                  defaults: tuple[Optional[int], Optional[int]] = (None, None)) -> None:
    """The options that can change on a live socket (a reload applies them in place).

    *defaults* are net.core.rmem_default/wmem_default: on a live socket a buffer
    that went back to null is set to them, since nothing else undoes a SO_RCVBUF.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(listener.share_port))
    set_hops(sock, listener.ipv6, listener.ttl, listener.loopback)
    for option, size, default in ((socket.SO_RCVBUF, listener.recv_buffer, defaults[0]),
                                  (socket.SO_SNDBUF, listener.send_buffer, defaults[1])):
        if size is None and default is not None:
            size = default // 2  # the kernel doubles it back to exactly the default
        if size is not None:
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def set_hops(sock: socket.socket, ipv6: bool, ttl: int, loopback: bool) -> None:
    """The TTL (IPv6: hop limit) and loopback of the multicast this socket sends."""
    if ipv6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loopback))
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loopback))


def granted_buffers(sock: socket.socket) -> tuple[int, int]:
    """(receive, send) buffer sizes as the kernel reports them after its doubling."""
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


# struct group_source_req: a 32-bit interface index, padding to the alignment of
# struct sockaddr_storage (that of a long), then two sockaddr_storage of 128 bytes.
_ALIGN = ctypes.alignment(ctypes.c_ulong)
_STORAGE = 128


def _storage(address: str) -> bytes:
    """*address* as a struct sockaddr_storage (port 0)."""
    if ":" in address:
        raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 0, 0) + \
            socket.inet_pton(socket.AF_INET6, address) + struct.pack("=I", 0)
    else:
        raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + socket.inet_aton(address)
    return raw.ljust(_STORAGE, b"\0")


def group_source_req(group: str, source: str, index: int) -> bytes:
    return (struct.pack("=I", index).ljust(_ALIGN, b"\0") + _storage(group) + _storage(source))


def _ipv6_mreq(group: str, index: int) -> bytes:
    return socket.inet_pton(socket.AF_INET6, group) + struct.pack("=I", index)


def ip_mreqn(group: str, address: str, index: int) -> bytes:
    """struct ip_mreqn: a group (0.0.0.0 for IP_MULTICAST_IF), a local address, an
    interface index."""
    return struct.pack("=4s4si", socket.inet_aton(group), socket.inet_aton(address), index)


def add_membership(sock: socket.socket, group: str, index: int,
                   sources: Optional[Sequence[str]] = None, address: str = "0.0.0.0") -> None:
    """Join *group* on interface *index* (IPv4: or the one that holds *address*), from
    any source, or for SSM one (source, group) join per source. OSError carries the
    errno (see errnoadvice.join_error_text); a failure part-way through an SSM join
    undoes what was joined."""
    level = socket.IPPROTO_IPV6 if ":" in group else socket.IPPROTO_IP
    if sources is None:
        if level == socket.IPPROTO_IPV6:
            sock.setsockopt(level, socket.IPV6_JOIN_GROUP, _ipv6_mreq(group, index))
        else:
            sock.setsockopt(level, socket.IP_ADD_MEMBERSHIP, ip_mreqn(group, address, index))
        return
    joined: list[str] = []
    try:
        for source in sources:
            sock.setsockopt(level, MCAST_JOIN_SOURCE_GROUP,
                            group_source_req(group, source, index))
            joined.append(source)
    except OSError:
        for source in joined:
            _leave_source(sock, level, group, source, index)
        raise


def drop_membership(sock: socket.socket, group: str, index: int,
                    sources: Optional[Sequence[str]] = None, address: str = "0.0.0.0") -> None:
    """Drop what add_membership joined, every (source, group) of an SSM one; a
    membership already gone with its interface is not an error."""
    level = socket.IPPROTO_IPV6 if ":" in group else socket.IPPROTO_IP
    try:
        if sources is not None:
            for source in sources:
                _leave_source(sock, level, group, source, index)
        elif level == socket.IPPROTO_IPV6:
            sock.setsockopt(level, socket.IPV6_LEAVE_GROUP, _ipv6_mreq(group, index))
        else:
            sock.setsockopt(level, socket.IP_DROP_MEMBERSHIP, ip_mreqn(group, address, index))
    except OSError as e:
        if e.errno not in BENIGN_LEAVE_ERRORS:
            raise


def _leave_source(sock: socket.socket, level: int, group: str, source: str,
                  index: int) -> None:
    try:
        sock.setsockopt(level, MCAST_LEAVE_SOURCE_GROUP, group_source_req(group, source, index))
    except OSError as e:
        if e.errno not in BENIGN_LEAVE_ERRORS:
            raise


def join(sock: socket.socket, listener: Listener, interface: Interface) -> None:
    """add_membership for a configured listener on one of its interfaces."""
    add_membership(sock, listener.group, interface.index, listener.sources, interface.address)


def leave(sock: socket.socket, listener: Listener, interface: Interface) -> None:
    """drop_membership for a configured listener on one of its interfaces."""
    drop_membership(sock, listener.group, interface.index, listener.sources,
                    interface.address)
