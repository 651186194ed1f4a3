"""Interfaces and their addresses, without netlink.

Which interface holds an address — secondary addresses included: SIOCGIFADDR
sees only each interface's primary address, so an address added beside it (a
VRRP/keepalived virtual address, a second `ip addr add`) would be invisible.
SIOCGIFCONF lists every IPv4 address with its interface; /proc/net/if_inet6
every IPv6 one; /proc/net/dev every interface, and SIOCGIFFLAGS says which are
up and multicast-capable; /proc/sys/net/ipv4/conf says which interfaces accept
datagrams from this host's own addresses. None of them needs a netlink socket, so
they work whatever the sandbox allows (socket.if_nameindex() would need one: glibc
answers it over netlink; the unit allows AF_NETLINK only for net/neigh.py).
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import itertools
import os
import socket
import struct
from typing import Iterator, Optional

SIOCGIFADDR = 0x8915
SIOCGIFCONF = 0x8912
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000
# sizeof(struct ifreq): the name, then a union whose largest member is struct ifmap
# (two longs, a short, three chars): 40 bytes on 64-bit Linux, 32 on 32-bit.
IFREQ_SIZE = 16 + max(16, struct.calcsize("LLHBBB0L"))
MAX_ADDRESSES = 1024


def ipv4_addresses() -> Iterator[tuple[int, str]]:
    """(interface index, address) for every IPv4 address of this network namespace."""
    size = IFREQ_SIZE * MAX_ADDRESSES
    buffer = array.array("B", bytes(size))
    pointer, _ = buffer.buffer_info()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("iL", size, pointer)  # struct ifconf
        used = struct.unpack("iL", fcntl.ioctl(sock.fileno(), SIOCGIFCONF, request))[0]
    data = buffer.tobytes()[:used]
    for offset in range(0, used - IFREQ_SIZE + 1, IFREQ_SIZE):
        name = data[offset:offset + 16].split(b"\0", 1)[0].decode()
        try:
            index = socket.if_nametoindex(name.split(":")[0])  # "eth0:1" is a label of eth0
        except OSError:
            continue
        yield index, socket.inet_ntoa(data[offset + 20:offset + 24])


def ipv6_table(proc_root: str = "/proc") -> str:
    """/proc/net/if_inet6 as it is now, "" without IPv6 (two equal tables: nothing changed)."""
    try:
        with open(f"{proc_root}/net/if_inet6") as table:
            return table.read()
    except OSError:  # no IPv6 in this kernel or namespace
        return ""


def ipv6_address_values(table: str) -> Iterator[tuple[int, int]]:
    """(interface index, address as a 128-bit integer) for every IPv6 address in *table*
    (ipv6_table()), tentative ones (still in duplicate address detection) included."""
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and len(fields[0]) == 32:
            yield int(fields[1], 16), int(fields[0], 16)


def ipv6_addresses(proc_root: str = "/proc") -> Iterator[tuple[int, str]]:
    """(interface index, address) for every IPv6 address of this network namespace."""
    for index, value in ipv6_address_values(ipv6_table(proc_root)):
        yield index, socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def ipv4_accepts_local(proc_root: str = "/proc") -> bool:
    """Whether some interface takes IPv4 datagrams whose source is an address of this host.

    The kernel drops them as martians unless net.ipv4.conf.<iface>.accept_local or
    net.ipv4.conf.all.accept_local is 1 ('default' only seeds interfaces made later,
    which then show it as their own). One small read per interface.
    """
    base = f"{proc_root}/sys/net/ipv4/conf"
    try:
        names = os.listdir(base)
    except OSError:
        return False
    for name in names:
        if name == "default":
            continue
        try:
            fd = os.open(f"{base}/{name}/accept_local", os.O_RDONLY)
        except OSError:  # the interface went away meanwhile
            continue
        try:
            value = os.read(fd, 16)
        except OSError:
            continue
        finally:
            os.close(fd)
        if value.strip() not in (b"0", b""):
            return True
    return False


def host_addresses() -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every IPv4 and IPv6 address of this network namespace, any interface."""
    found = set()
    try:
        for _index, text in itertools.chain(ipv4_addresses(), ipv6_addresses()):
            found.add(ipaddress.ip_address(text))
    except OSError:  # no socket to ask in this sandbox: what was found so far
        pass
    return frozenset(found)


def index_of_address(address: str) -> Optional[int]:
    """Index of the interface that holds *address* (IPv4 or IPv6), or None if none does."""
    if ":" in address:
        wanted = socket.inet_pton(socket.AF_INET6, address)
        for index, candidate in ipv6_addresses():
            if socket.inet_pton(socket.AF_INET6, candidate) == wanted:
                return index
        return None
    for index, candidate in ipv4_addresses():
        if candidate == address:
            return index
    return None


def interface_names(proc_root: str = "/proc") -> list[str]:
    """Every interface of this network namespace, from /proc/net/dev."""
    try:
        with open(f"{proc_root}/net/dev") as table:
            lines = table.read().splitlines()[2:]  # two lines of column titles
    except OSError:
        return []
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def interface_flags(name: str) -> Optional[int]:
    """The IFF_* flags of interface *name*, or None if it is gone."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS,
                                struct.pack("16sH22x", name.encode()[:15], 0))
        except OSError:
            return None
    return struct.unpack_from("H", ifreq, 16)[0]


def multicast_interfaces() -> list[tuple[int, str]]:
    """(index, name) of every interface that is up and multicast-capable, lo aside."""
    found = []
    for name in interface_names():
        flags = interface_flags(name)
        if flags is None or flags & IFF_LOOPBACK:
            continue
        if flags & IFF_UP and flags & IFF_MULTICAST:
            try:
                found.append((socket.if_nametoindex(name), name))
            except OSError:
                continue
    return sorted(found)


def primary_address(sock: socket.socket, name: str) -> Optional[str]:
    """The primary IPv4 address of interface *name* (SIOCGIFADDR), or None if it has none."""
    try:
        ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(ifreq[20:24])
