"""Which interface holds an IPv4 address — secondary addresses included.

SIOCGIFADDR sees only each interface's primary address, so an address added
beside it (a VRRP/keepalived virtual address, a second `ip addr add`) would be
invisible. SIOCGIFCONF lists every IPv4 address with its interface, and needs
no netlink socket, so the unit can keep AF_NETLINK out of its sandbox
(socket.if_nameindex() would need it: glibc answers it over netlink).
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
from typing import Iterator, Optional

SIOCGIFADDR = 0x8915
SIOCGIFCONF = 0x8912
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


def index_of_address(address: str) -> Optional[int]:
    """Index of the interface that holds *address*, or None if none does."""
    for index, candidate in ipv4_addresses():
        if candidate == address:
            return index
    return None


def primary_address(sock: socket.socket, name: str) -> Optional[str]:
    """The primary IPv4 address of interface *name* (SIOCGIFADDR), or None if it has none."""
    try:
        ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(ifreq[20:24])
