"""Which interface holds an IPv4 address: every address, secondary ones included.

SIOCGIFADDR sees only each interface's primary address, so an address added
beside it (a VRRP/keepalived virtual address, a second `ip addr add`) would be
invisible. The rtnetlink address dump lists them all; where netlink is not
allowed, we fall back to SIOCGIFADDR.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import Iterator, Optional

RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
RTATTR = struct.Struct("=HH")  # length, type
SIOCGIFADDR = 0x8915


def _align(length: int) -> int:
    return (length + 3) & ~3


def netlink_ipv4_addresses() -> Iterator[tuple[int, str]]:
    """(interface index, address) for every IPv4 address, from an RTM_GETADDR dump."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.settimeout(2)
        body = IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
        nl.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), RTM_GETADDR,
                                  NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        while True:
            data = nl.recv(65536)
            offset = 0
            while offset + NLMSG_HEADER.size <= len(data):
                length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
                if length < NLMSG_HEADER.size:
                    return
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    raise OSError("netlink address dump failed")
                if kind == RTM_NEWADDR:
                    yield from _parse_address(data[offset + NLMSG_HEADER.size:offset + length])
                offset += _align(length)


def _parse_address(message: bytes) -> Iterator[tuple[int, str]]:
    family, _, _, _, index = IFADDRMSG.unpack_from(message)
    if family != socket.AF_INET:
        return
    attrs: dict[int, bytes] = {}
    offset = IFADDRMSG.size
    while offset + RTATTR.size <= len(message):
        length, kind = RTATTR.unpack_from(message, offset)
        if length < RTATTR.size:
            break
        attrs[kind] = message[offset + RTATTR.size:offset + length]
        offset += _align(length)
    # IFA_LOCAL is this host's address; IFA_ADDRESS is the peer's on point-to-point links.
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is not None and len(raw) == 4:
        yield index, socket.inet_ntoa(raw)


def primary_address(sock: socket.socket, name: str) -> Optional[str]:
    """The primary IPv4 address of interface *name* (SIOCGIFADDR), or None if it has none."""
    try:
        ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(ifreq[20:24])


def index_of_address(address: str) -> Optional[int]:
    """Index of the interface that holds *address*, or None if none does."""
    try:
        for index, found in netlink_ipv4_addresses():
            if found == address:
                return index
        return None
    except OSError:  # netlink refused (a sandbox without AF_NETLINK): primaries only
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index, name in socket.if_nameindex():
            if primary_address(sock, name) == address:
                return index
    return None


