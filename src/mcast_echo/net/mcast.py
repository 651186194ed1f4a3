"""Multicast sockets: create, join, leave — and one table of what each errno means.

One function per step, as python-zeroconf does: open a socket bound to the
group, resolve the interface, add and drop a membership. Expected errnos map to
a line that names the fix (the JOIN_ERRORS table is the only place those words
live); any other errno is shown in the kernel's words. Either way the
responder waits and retries: a join error is never fatal.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Optional

from ..schema import Listener
from . import ifaddr

# Python 3.11 lacks the constant; it is 49 in linux/in.h. With it off, a socket
# bound to a port receives only the groups *it* joined, never another group
# some other process joined on the same port.
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
# Also missing before Python 3.12 (linux/in.h): the arrival interface and TTL.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)

ROUTE_FIX = "add a multicast route (ip route add 224.0.0.0/4 dev IFACE)"

JOIN_ERRORS: dict[int, str] = {
    errno.ENODEV: f"no such device, or no route to the group: {ROUTE_FIX} or set 'interface'",
    errno.EADDRNOTAVAIL: "the interface has no such address: set 'interface' to a name or "
                         "to an address of this host",
    errno.ENOBUFS: "too many memberships: raise net.ipv4.igmp_max_memberships "
                   "(sysctl -w net.ipv4.igmp_max_memberships=...)",
    errno.EADDRINUSE: "this socket is already a member of the group",
    errno.EINVAL: "the kernel refused the membership (is the address a multicast group?)",
    errno.ENETDOWN: "the interface is down",
}
BENIGN_LEAVE_ERRORS = frozenset({errno.EADDRNOTAVAIL, errno.ENODEV, errno.EINVAL})


class InterfaceUnavailable(Exception):
    """The interface to join on is not there (yet); the daemon waits and retries."""


@dataclass(frozen=True)
class Interface:
    """Where a membership lives: the interface's index, and the address named, if any."""

    index: int
    address: str  # "0.0.0.0" unless the config named the interface by an address
    name: str  # what the operator calls it, for log lines

    def mreqn(self, group: str) -> bytes:
        return struct.pack("=4s4si", socket.inet_aton(group),
                           socket.inet_aton(self.address), self.index)


def resolve_interface(spec: Optional[str], group: str) -> Interface:
    """The interface named in the config (or the route to *group*), as it is right now."""
    if spec is None:
        return _route_interface(group)
    if _is_ipv4(spec):
        index = ifaddr.index_of_address(spec)
        if index is None:
            raise InterfaceUnavailable(f"no interface has address {spec}")
        return Interface(index, spec, interface_name(index))
    try:
        return Interface(socket.if_nametoindex(spec), "0.0.0.0", spec)
    except OSError:
        raise InterfaceUnavailable("no such device") from None


def _route_interface(group: str) -> Interface:
    """The interface the kernel's routing table picks for *group*.

    Joining by that index is what INADDR_ANY would do, but we can then name it
    in every log line ("left 224.3.29.71 on eth0").
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((group, 9))  # no packet is sent: connect only routes
            source = probe.getsockname()[0]
        except OSError:
            raise InterfaceUnavailable(f"no route to {group}: {ROUTE_FIX} "
                                       "or set 'interface'") from None
    index = ifaddr.index_of_address(source)
    if index is None:
        raise InterfaceUnavailable(f"the route to {group} leaves from {source}, "
                                   "which no interface holds")
    return Interface(index, "0.0.0.0", interface_name(index))


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def interface_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


def open_socket(listener: Listener) -> socket.socket:
    """A non-blocking UDP socket bound to (group, port) that sees only that group.

    Binding to the group address (not 0.0.0.0) keeps unicast and other groups
    on the same port out; IP_MULTICAST_ALL=0 keeps out groups that other sockets
    joined. SO_REUSEADDR only with ``share_port``: otherwise a second responder
    on the same group and port (which would double every echo) fails to bind.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        # Ancillary data for the probe trailer: arrival interface and TTL.
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        apply_options(sock, listener)
        sock.bind((listener.group, listener.port))
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
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, listener.ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(listener.loopback))
    for option, size, default in ((socket.SO_RCVBUF, listener.recv_buffer, defaults[0]),
                                  (socket.SO_SNDBUF, listener.send_buffer, defaults[1])):
        if size is None and default is not None:
            size = default // 2  # the kernel doubles it back to exactly the default
        if size is not None:
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def granted_buffers(sock: socket.socket) -> tuple[int, int]:
    """(receive, send) buffer sizes as the kernel reports them after its doubling."""
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


def join(sock: socket.socket, group: str, interface: Interface) -> None:
    """Add the membership; OSError carries the errno (see join_error_text)."""
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, interface.mreqn(group))


def leave(sock: socket.socket, group: str, interface: Interface) -> None:
    """Drop the membership; one already gone with its interface is not an error."""
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, interface.mreqn(group))
    except OSError as e:
        if e.errno not in BENIGN_LEAVE_ERRORS:
            raise


def join_error_text(error: OSError) -> str:
    """The operator's line for a failed join: the table's fix, or the kernel's words."""
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    return f"{name}: {JOIN_ERRORS.get(error.errno or 0, error.strerror or str(error))}"
