"""The socket of `mcast-echo ping`, IPv4 and IPv6: it sends the probes and hears the echoes.

``open_probe_socket`` turns ``Settings`` into one UDP socket (TTL / hop limit,
loopback, outgoing interface, arrival TTL, destination address and kernel
timestamps) and says where probes leave from. Echoes come back by unicast, and,
from responders with ``reply: group`` or ``both``, to the group *on our port*
(as ssmping does, so that responders on the group's port never hear them): the
socket joins the group on the probes' interface for those, and IP_PKTINFO /
IPV6_PKTINFO tell the two apart (``net.ancillary.Received``). -S is the source of each
probe (``source_pktinfo``). Errors a user can act on become ``PingError``, in the words
of net/errnoadvice.py.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Optional

from ..addresses import is_ssm_group, needs_zone
from ..net import ancillary, ifaddr
from ..net.ancillary import SO_TIMESTAMPNS
from ..net.errnoadvice import ping_error_text
from ..net.ifaddr import index_of_address
from ..net.mcast import (
    IP_MULTICAST_ALL,
    IPV6_MULTICAST_ALL,
    add_membership,
    interface_name,
    ip_mreqn,
    set_hops,
)
from .settings import PingError, Settings, UsageError

WANTED_RCVBUF = 4 << 20  # echoes from many responders at once; the kernel caps it at rmem_max


def explain(err: OSError, settings: Settings) -> str:
    """One line for an OSError of ours, pinging a group: what failed, and the fix."""
    return ping_error_text(err, of_host=False, target=settings.group, shown=settings.target,
                           ipv6=settings.ipv6, interface=settings.interface,
                           source=settings.source, size=settings.size)


# --- addresses and interfaces ------------------------------------------------------------------

def shown_address(address: str, scope_id: int = 0) -> str:
    """An IPv6 address with its zone when it has one (fe80::2%eth0)."""
    return f"{address}%{interface_name(scope_id)}" if scope_id else address


@dataclass(frozen=True)
class Path:
    """Where probes leave from: the interface (index, name) and the source address."""

    index: int  # 0: the kernel's route decides at each send
    ifname: Optional[str]
    source: Optional[str]

    def text(self) -> str:
        if self.ifname and self.source:
            return f"{self.ifname} ({self.source})"
        return self.ifname or self.source or "the route to the group"


def interface_index(settings: Settings) -> int:
    """-I as an interface index (0: none given); a name or an address of this host."""
    spec = settings.interface
    if not spec:
        return 0
    try:
        address = ipaddress.ip_address(spec)
    except ValueError:
        try:
            return socket.if_nametoindex(spec)
        except OSError:
            raise PingError(f"-I {spec}: no such interface "
                            "(list them with `ip -brief address`)") from None
    if (address.version == 6) != settings.ipv6:
        raise PingError(f"-I {spec} is an IPv{address.version} address and "
                        f"{settings.host or settings.group} an IPv{6 if settings.ipv6 else 4} "
                        f"{'address' if settings.host else 'group'}: pass an interface name "
                        "or an address of its family")
    index = index_of_address(str(address).split("%")[0])
    if index is None:
        family = "IPv6" if settings.ipv6 else "IPv4"
        raise PingError(f"-I {spec} is not an {family} address of this host: pass one of "
                        "its addresses or an interface name (EADDRNOTAVAIL)")
    return index


def _multicast_if(sock: socket.socket, settings: Settings, index: int) -> None:
    if settings.ipv6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        return
    # For a name the interface's own address goes in too: it becomes the source
    # address, which on lo is what keeps the source from being 0.0.0.0.
    address = settings.source or settings.interface or ""
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        address = ifaddr.primary_address(sock, interface_name(index)) or "0.0.0.0"
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                    ip_mreqn("0.0.0.0", address, index))


def destination(settings: Settings, index: int) -> tuple:
    """The sendto() address of the group; a link-scope IPv6 group carries its interface."""
    if settings.ipv6:
        return (settings.group, settings.port, 0, index if settings.link_scope else 0)
    return (settings.group, settings.port)


def _outgoing(sock: socket.socket, settings: Settings, index: int) -> None:
    """TTL, loopback, interface and -S source: what a probe leaves with."""
    set_hops(sock, settings.ipv6, settings.ttl, settings.loopback)
    if index:
        _multicast_if(sock, settings, index)


def _source_address(settings: Settings, index: int) -> tuple:
    """The bind() address of -S (with its zone if it is link-local)."""
    assert settings.source is not None
    if not settings.ipv6:
        return (settings.source, 0)
    address = settings.source.split("%")[0]
    return (address, 0, 0, index if needs_zone(address) else 0)


def source_pktinfo(settings: Settings, index: int) -> list[tuple[int, int, bytes]]:
    """sendmsg() ancillary data that makes -S the source of a probe; [] without -S.

    The socket itself stays bound to the wildcard address, so that it also hears the
    echoes sent to the group.
    """
    if not settings.source:
        return []
    family = socket.AF_INET6 if settings.ipv6 else socket.AF_INET
    return ancillary.source_pktinfo(socket.inet_pton(family, settings.source.split("%")[0]), index)


def _path(settings: Settings, index: int) -> Path:
    """Where the kernel sends a probe from: a throwaway socket set up alike, connected."""
    family = socket.AF_INET6 if settings.ipv6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        _outgoing(sock, settings, index)
        if settings.source:
            sock.bind(_source_address(settings, index))
        sock.connect(destination(settings, index))
        local = sock.getsockname()
    source = local[0]
    if index == 0:  # the route chose: the interface is the one that holds the source
        index = (local[3] if settings.ipv6 and local[3]
                 else index_of_address(source.split("%")[0])) or 0
    return Path(index, interface_name(index) if index else None, source)


def open_probe_socket(settings: Settings) -> tuple[socket.socket, Path, str]:
    """The probing socket (blocking sends; receives use MSG_DONTWAIT), where probes leave
    from, and why echoes sent to the group will not be heard ("" when they will)."""
    index = interface_index(settings)
    if not index and settings.source:  # probes leave through the interface that holds -S
        index = index_of_address(settings.source.split("%")[0]) or 0
        if not index:
            raise PingError(explain(OSError(errno.EADDRNOTAVAIL, "not local"), settings))
    if settings.link_scope and not index:  # usage, as the man page's exit table says (64)
        raise UsageError(f"{settings.group} is a link-scope group: name the interface with "
                        f"-I IFACE (or write [{settings.group}%IFACE]:{settings.port})")
    family = socket.AF_INET6 if settings.ipv6 else socket.AF_INET
    try:
        path = _path(settings, index)
    except OSError as err:
        raise PingError(explain(err, settings)) from None
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        _outgoing(sock, settings, index)
        set_receive_options(sock, settings.ipv6)
        sock.bind(("::", 0) if settings.ipv6 else ("0.0.0.0", 0))
    except OSError as err:
        sock.close()
        raise PingError(explain(err, settings)) from None
    except BaseException:
        sock.close()
        raise
    return sock, path, _join(sock, settings, path.index)


def set_receive_options(sock: socket.socket, ipv6: bool) -> None:
    """What each echo's ancillary data carries (arrival TTL, destination, kernel time),
    only the groups this socket joined, and room for many echoes at once."""
    ancillary.ask_for_arrival(sock, ipv6)
    if ipv6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, WANTED_RCVBUF)


def _join(sock: socket.socket, settings: Settings, index: int) -> str:
    """Join the group on the probes' interface, for echoes sent to the group; "" when
    joined, else why not (ping goes on with unicast echoes)."""
    return join_group(sock, settings.group, index)


def join_group(sock: socket.socket, group: str, index: int, source: Optional[str] = None) -> str:
    """Join *group* on interface *index* (any source, or only *source*: SSM, ssmping's
    (S,G)); "" when joined, else why not (ping goes on with unicast replies)."""
    try:
        add_membership(sock, group, index,
                       None if source is None else (source.split("%")[0],))
    except OSError as err:
        joined = f"({source}, {group})" if source is not None else group
        return (f"cannot join {joined} for echoes sent to the group "
                f"({err.strerror or err}): unicast echoes only")
    return ""


def join_for_replies(sock: socket.socket, settings: Settings, index: int) -> str:
    """Join the group ssmping's and RFC 6450's replies come to: (HOST, group) for SSM,
    else any source (asmping's way); "" when joined, else why not."""
    source = settings.host if is_ssm_group(settings.group) else None
    return join_group(sock, settings.group, index, source)
