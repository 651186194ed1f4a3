"""Ancillary data (control messages): the kinds we ask for, the room they take, how
to read them and how to build the one we send.

Received: IP_PKTINFO / IPV6_PKTINFO (the arrival interface and the datagram's
destination address) and IP_TTL / IPV6_HOPLIMIT, which ``ask_for_arrival`` turns on,
and SO_TIMESTAMPNS (the kernel's receive time). recvmsg hands them over as a list of
(level, type, data), read by ``ip_arrival`` and ``Received``; recvmmsg leaves them in a
raw buffer (net/mmsg.py), which ``parse_ip_cmsgs`` and ``pktinfo_destination`` walk, or
whose arrival interfaces and destinations a batch reads in place (the offsets below
``parse_ip_cmsgs``). Sent: an IP_PKTINFO /
IPV6_PKTINFO that picks a datagram's source address (``source_pktinfo``), and the
IP_PKTINFO that sends a batched group echo out of its arrival interface.

``ip_arrival`` runs once per datagram on the plain echo path: it reads only the two
values that path needs, and nothing else is added to it.
"""

from __future__ import annotations

import socket
import struct
from typing import Iterator, Optional

# Missing before Python 3.12 (linux/in.h, linux/in6.h): the arrival interface and TTL.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
# asm/socket.h: the kernel's receive time of each datagram, a timespec of CLOCK_REALTIME.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
TIMESPEC_SIZE = _TIMESPEC.size

# Room for in6_pktinfo (20 bytes, in_pktinfo's 12 fit) and a TTL or hop limit ...
ARRIVAL_SPACE = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4)
# ... and for the kernel's receive time too.
STAMPED_ARRIVAL_SPACE = socket.CMSG_SPACE(TIMESPEC_SIZE) + ARRIVAL_SPACE

_INT = struct.Struct("=i")
_UINT = struct.Struct("=I")
_HALVES = struct.Struct("=QQ")
_CMSG_HEADER = struct.Struct("@Nii")  # cmsg_len, cmsg_level, cmsg_type
_ALIGN = struct.calcsize("@N")  # a cmsg starts on a size_t boundary (CMSG_ALIGN)
_IPPROTO_IP, _IPPROTO_IPV6 = int(socket.IPPROTO_IP), int(socket.IPPROTO_IPV6)
_IP_TTL = int(socket.IP_TTL)


def ask_for_arrival(sock: socket.socket, ipv6: bool) -> None:
    """Have each datagram *sock* reads carry its arrival interface and destination
    (IP_PKTINFO / IPV6_PKTINFO) and its TTL or hop limit."""
    if ipv6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)


def timespec_ns(data: object, offset: int = 0) -> int:
    """A timespec (SO_TIMESTAMPNS, SIOCGSTAMPNS) as ns since 1970."""
    seconds, nanoseconds = _TIMESPEC.unpack_from(data, offset)  # type: ignore[arg-type]
    return seconds * 1_000_000_000 + nanoseconds


def ip_arrival(ancdata: list) -> tuple[Optional[int], Optional[int]]:
    """(arrival interface index, arrival TTL or hop limit) from recvmsg's IPv4 or IPv6
    ancillary data."""
    # Per datagram: the levels as plain int globals and compiled structs (socket.X and
    # struct's format cache cost a look-up each).
    ifindex = ttl = None
    for level, kind, payload in ancdata:
        if level == _IPPROTO_IP and len(payload) >= 4:
            if kind == IP_PKTINFO:
                ifindex = _INT.unpack_from(payload)[0]
            elif kind == _IP_TTL:
                ttl = _INT.unpack_from(payload)[0]
        elif level == _IPPROTO_IPV6:
            if kind == IPV6_PKTINFO and len(payload) >= 20:
                ifindex = _UINT.unpack_from(payload, 16)[0]
            elif kind == IPV6_HOPLIMIT and len(payload) >= 4:
                ttl = _INT.unpack_from(payload)[0]
    return ifindex, ttl


class Received:
    """All that recvmsg's ancillary data says about one datagram; None where absent."""

    __slots__ = ("ifindex", "destination", "to_group", "ttl", "received_ns")

    def __init__(self, ancdata: list[tuple[int, int, bytes]]) -> None:
        self.ifindex: Optional[int] = None  # the interface it came in on
        self.destination: Optional[bytes] = None  # its destination address, packed
        self.to_group = False  # sent to a multicast address (224.0.0.0/4, ff00::/8), not to us
        self.ttl: Optional[int] = None  # its IP TTL or IPv6 hop limit
        self.received_ns: Optional[int] = None  # the kernel's receive time, ns since 1970
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET:
                if kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC_SIZE:
                    self.received_ns = timespec_ns(data)
            elif level == socket.IPPROTO_IP:
                if kind == socket.IP_TTL and len(data) >= 4:
                    (self.ttl,) = _INT.unpack_from(data)
                elif kind == IP_PKTINFO and len(data) >= 12:
                    # ipi_ifindex, ipi_spec_dst, ipi_addr (the header's destination)
                    (self.ifindex,) = _INT.unpack_from(data)
                    self.destination = data[8:12]
                    self.to_group = data[8] >> 4 == 0xE
            elif level == socket.IPPROTO_IPV6:
                if kind == IPV6_HOPLIMIT and len(data) >= 4:
                    (self.ttl,) = _INT.unpack_from(data)
                elif kind == IPV6_PKTINFO and len(data) >= 20:  # ipi6_addr, ipi6_ifindex
                    (self.ifindex,) = _UINT.unpack_from(data, 16)
                    self.destination = data[:16]
                    self.to_group = data[0] == 0xFF


def source_pktinfo(address: bytes, ifindex: int = 0) -> list[tuple[int, int, bytes]]:
    """sendmsg() ancillary data that sends a datagram from *address* (packed: 4 bytes
    IPv4, 16 IPv6), out of interface *ifindex* (0: routing decides)."""
    if len(address) == 16:
        return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, address + struct.pack("=I", ifindex))]
    return [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=i4s4s", ifindex, address, bytes(4)))]


def _cmsgs(buffer: bytearray, start: int, length: int) -> Iterator[tuple[int, int, int, int]]:
    """(level, type, offset of its data, its size) of each cmsg in buffer[start:start+length]."""
    offset, end = start, start + length
    while offset + _CMSG_HEADER.size <= end:
        cmsg_len, level, kind = _CMSG_HEADER.unpack_from(buffer, offset)
        if cmsg_len < _CMSG_HEADER.size or offset + cmsg_len > end:
            return
        yield level, kind, offset + _CMSG_HEADER.size, cmsg_len - _CMSG_HEADER.size
        offset += (cmsg_len + _ALIGN - 1) // _ALIGN * _ALIGN


def parse_ip_cmsgs(buffer: bytearray, start: int,
                   length: int) -> tuple[Optional[int], Optional[int], Optional[int]]:
    """Walk the cmsghdr chain in buffer[start:start+length]: (ifindex, ttl, received_ns) from
    IP_PKTINFO or IPV6_PKTINFO, IP_TTL or IPV6_HOPLIMIT, and SO_TIMESTAMPNS."""
    ifindex = ttl = received_ns = None
    for level, kind, data, size in _cmsgs(buffer, start, length):
        if level == _IPPROTO_IP and size >= 4:
            if kind == IP_PKTINFO:
                ifindex = _INT.unpack_from(buffer, data)[0]
            elif kind == _IP_TTL:
                ttl = _INT.unpack_from(buffer, data)[0]
        elif level == _IPPROTO_IPV6:
            if kind == IPV6_PKTINFO and size >= 20:  # ipi6_addr, ipi6_ifindex
                ifindex = _UINT.unpack_from(buffer, data + 16)[0]
            elif kind == IPV6_HOPLIMIT and size >= 4:
                ttl = _INT.unpack_from(buffer, data)[0]
        elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and size >= TIMESPEC_SIZE:
            received_ns = timespec_ns(buffer, data)
    return ifindex, ttl, received_ns


def pktinfo_destination(buffer: bytearray, start: int, length: int) -> Optional[bytes]:
    """The destination address (packed: ipi_addr, ipi6_addr) of the IP_PKTINFO or
    IPV6_PKTINFO in buffer[start:start+length]; None if it has none (ip_destination reads
    it, as from recvmsg's list)."""
    return ip_destination([(level, kind, bytes(buffer[data:data + size]))
                           for level, kind, data, size in _cmsgs(buffer, start, length)])


def destination_key(packed: bytes) -> object:
    """A destination address (packed, 4 or 16 bytes) as a batch reads it in place (the
    offsets below): IPv4 the native integer of its four bytes, IPv6 its two native 64-bit
    halves. A port socket keys its groups so (daemon/sharedsocket.py)."""
    if len(packed) == 4:
        return _UINT.unpack(packed)[0]
    return _HALVES.unpack(packed)


def ip_destination(ancdata: list) -> Optional[bytes]:
    """The destination address (packed) from recvmsg's IP_PKTINFO or IPV6_PKTINFO."""
    for level, kind, payload in ancdata:
        if level == _IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            return payload[8:12]
        if level == _IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(payload) >= 20:
            return payload[:16]
    return None


# Where a batch finds each datagram's arrival interface without walking its cmsgs
# (net/mmsg.py): while the socket's datagrams carry no receive time, the kernel writes
# the pktinfo first (udp_recvmsg, udpv6_recvmsg), so the first cmsg's type says whether
# it is there and the interface index sits at a fixed offset. In 32-bit words from the
# start of a datagram's control buffer, per family (False: IPv4, True: IPv6).
FIRST_CMSG_TYPE_WORD = (_CMSG_HEADER.size - 4) // 4
PKTINFO_TYPE = {False: IP_PKTINFO, True: IPV6_PKTINFO}
PKTINFO_IFINDEX_WORD = {False: _CMSG_HEADER.size // 4,  # in_pktinfo.ipi_ifindex
                        True: (_CMSG_HEADER.size + 16) // 4}  # in6_pktinfo.ipi6_ifindex
# ... and its destination address (a shared socket's datagram says its group there): IPv4's
# in_pktinfo.ipi_addr as one 32-bit word, IPv6's ipi6_addr as two 64-bit halves.
PKTINFO_DESTINATION_WORD = (_CMSG_HEADER.size + 8) // 4
PKTINFO_DESTINATION_HALF = _CMSG_HEADER.size // 8
# The control message a batched IPv4 group echo is sent with: its in_pktinfo's
# interface index is set per echo (the arrival one), the rest stays 0 (routing picks
# the source address). IPv6 puts the interface in the group's sockaddr_in6 instead.
SEND_PKTINFO_SPACE = socket.CMSG_SPACE(12)
SEND_PKTINFO_IFINDEX_WORD = _CMSG_HEADER.size // 4


def send_pktinfo_header() -> bytes:
    """An IP_PKTINFO cmsg with interface 0, SEND_PKTINFO_SPACE bytes (see above)."""
    message = _CMSG_HEADER.pack(socket.CMSG_LEN(12), _IPPROTO_IP, IP_PKTINFO) + bytes(12)
    return message.ljust(SEND_PKTINFO_SPACE, b"\0")
