"""The kernel's neighbour table (ARP, IPv6 ND): which addresses do not resolve.

One read-only rtnetlink dump (RTM_GETNEIGH) of one family's table: no capability is
needed and nothing is changed. Used by daemon/sendguard.py; see there for why.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import NamedTuple

RTM_NEWNEIGH = 28
RTM_GETNEIGH = 30
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NDA_DST = 1
NDA_CACHEINFO = 3
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_NDMSG = struct.Struct("=BBHiHBB")  # family, pads, ifindex, state, flags, type
_RTATTR = struct.Struct("=HH")  # length, type
_UPDATED = struct.Struct("=I")  # nda_cacheinfo.ndm_updated, its third field
_TICK = 1.0 / os.sysconf("SC_CLK_TCK")  # nda_cacheinfo counts in clock ticks (USER_HZ)
MAX_ENTRIES = 16384  # a dump is cut here: bounded work however large the table
DUMP_SECONDS = 0.05  # and here


class Unresolved(NamedTuple):
    address: bytes  # packed: 4 bytes (IPv4) or 16 (IPv6)
    failed: bool  # NUD_FAILED: resolution gave up; else NUD_INCOMPLETE: still trying
    age: float  # seconds since the entry entered that state


def unresolved(family: int) -> list[Unresolved]:
    """The entries of *family*'s neighbour table (AF_INET: ARP, AF_INET6: ND) that are
    waiting for a resolution or whose resolution failed; those read so far if the dump
    takes longer than DUMP_SECONDS or MAX_ENTRIES. OSError if the table cannot be read
    (no netlink here, e.g. a sandbox without AF_NETLINK: EAFNOSUPPORT)."""
    found: list[Unresolved] = []
    deadline = time.monotonic() + DUMP_SECONDS
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(DUMP_SECONDS)
        sock.bind((0, 0))
        request = _NDMSG.pack(family, 0, 0, 0, 0, 0, 0)
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(request), RTM_GETNEIGH,
                                 NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request)
        seen = 0
        while seen < MAX_ENTRIES and time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                return found
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    return found
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
                    raise OSError(code, f"neighbour dump: {os.strerror(code)}")
                if kind == RTM_NEWNEIGH:
                    seen += 1
                    entry = _parse(data, offset + _NLMSGHDR.size, offset + length)
                    if entry is not None:
                        found.append(entry)
                offset += (length + 3) & ~3
    return found


def _parse(data: bytes, start: int, end: int) -> Unresolved | None:
    """One RTM_NEWNEIGH body, if its state is INCOMPLETE or FAILED."""
    if start + _NDMSG.size > end:
        return None
    state = _NDMSG.unpack_from(data, start)[4]
    if not state & (NUD_INCOMPLETE | NUD_FAILED):
        return None
    address = None
    age = 0.0
    offset = start + _NDMSG.size
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            break
        if kind == NDA_DST:
            address = data[offset + 4 : offset + length]
        elif kind == NDA_CACHEINFO and length >= 4 + 12:
            age = _UPDATED.unpack_from(data, offset + 4 + 8)[0] * _TICK
        offset += (length + 3) & ~3
    if address is None or len(address) not in (4, 16):
        return None
    return Unresolved(address, bool(state & NUD_FAILED), age)
