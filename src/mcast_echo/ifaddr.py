"""Which interface holds an IPv4 address: every address, secondary ones included.

SIOCGIFADDR sees only each interface's primary address, so an address added
beside it (a VRRP/keepalived virtual address, a second `ip addr add`) would be
invisible. The rtnetlink address dump lists them all; where netlink is not
allowed, SIOCGIFCONF (which lists secondaries too) stands in.
"""

from __future__ import annotations

import array
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
SIOCGIFCONF = 0x8912
IFREQ_SIZE = 40  # sizeof(struct ifreq) on 64-bit Linux


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


def ioctl_ipv4_addresses() -> Iterator[tuple[int, str]]:
    """(interface index, address) from SIOCGIFCONF, secondary addresses included.

    The fallback where netlink is refused; it needs no netlink at all (unlike
    socket.if_nameindex(), which glibc answers over netlink).
    """
    size = IFREQ_SIZE * 256
    buffer = array.array("B", bytes(size))
    address, _ = buffer.buffer_info()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("iL", size, address)
        used = struct.unpack("iL", fcntl.ioctl(sock.fileno(), SIOCGIFCONF, request))[0]
    data = buffer.tobytes()[:used]
    for offset in range(0, used - IFREQ_SIZE + 1, IFREQ_SIZE):
        name = data[offset:offset + 16].split(b"\0", 1)[0].decode()
        try:
            index = socket.if_nametoindex(name.split(":")[0])  # "eth0:1" is eth0's label
        except OSError:
            continue
        yield index, socket.inet_ntoa(data[offset + 20:offset + 24])


def index_of_address(address: str) -> Optional[int]:
    """Index of the interface that holds *address*, or None if none does."""
    try:
        found = list(netlink_ipv4_addresses())
    except OSError:  # netlink refused (a sandbox without AF_NETLINK)
        found = list(ioctl_ipv4_addresses())
    for index, candidate in found:
        if candidate == address:
            return index
    return None
