"""The kernel's drop counter of a socket: datagrams it discarded before we could read them.

A datagram that arrives while a socket's receive buffer is full is dropped by the kernel,
unseen by the daemon; the socket's drop counter (``sk_drops``: also the rare checksum
error or socket-filter drop) is the only trace. ``getsockopt(SO_MEMINFO)`` (Linux 4.12)
returns it with the socket's other memory figures -- the number /proc/net/udp shows in
its ``drops`` column and ``ss -uam`` as ``d``.

It is read when STATUS or a scrape asks, never per datagram, so the echo pays nothing
for it. One system call per socket: 4,096 sockets take ~7 ms, where reading
/proc/net/udp costs ~25 ms for the same sockets, and grows with every other UDP socket of
the namespace (SO_RXQ_OVFL would cost ancillary data on every receive).
"""

from __future__ import annotations

import socket
import struct
from typing import Optional

# 55 on the architectures of asm-generic/socket.h (x86, arm, arm64, powerpc, s390, riscv,
# mips); another number elsewhere (parisc, sparc), where the length check below refuses
# whatever that option is.
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
SK_MEMINFO_DROPS = 8  # index in the array of u32 (linux/sock_diag.h)
MEMINFO_BYTES = 4 * (SK_MEMINFO_DROPS + 1)
ROOM = 64  # more than the kernel's array (9 values today): it answers with what it has


def socket_drops(sock: socket.socket) -> Optional[int]:
    """The datagrams the kernel dropped for *sock* since it was opened; None if unknown
    (a kernel before 4.12, or the socket closed meanwhile)."""
    try:
        meminfo = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, ROOM)
    except OSError:  # ENOPROTOOPT: too old a kernel; EBADF: closed by a reload meanwhile
        return None
    if len(meminfo) < MEMINFO_BYTES or len(meminfo) % 4:
        return None  # not SO_MEMINFO's array of u32
    return struct.unpack_from("=I", meminfo, 4 * SK_MEMINFO_DROPS)[0]
