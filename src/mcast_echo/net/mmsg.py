"""recvmmsg/sendmmsg through ctypes: one system call per batch each way, no allocation.

A Batch owns preallocated buffers for *size* datagrams: the payloads (an
anonymous mapping, so only the pages a datagram touches become resident), the
peers' socket addresses, the ancillary data, and two arrays of ``struct
mmsghdr``: one that recvmmsg fills and one that sendmmsg reads. The send side
points at the same payload and address buffers, so an echo is a datagram sent
back from where it was received: the caller only sets each echo's length.

The caller reads the fields through memoryviews, no ctypes attribute access per
datagram. Flat ones (``words``, ``name_bytes``, ``name_words``, ``payload_words``,
``send_length_words``) are indexed at the module's offsets; strided ones hold one
field of every datagram (``lengths``, ``first_octets``, ``sources``,
``port_high_bytes``, ``family_ports``, ``first_payload_words``, ``send_lengths``), so
that a whole batch is checked and its echo lengths set by C-level operations on slices
(``max(lengths[:n])``, ``0 not in port_high_bytes[:n]``, ``send_lengths[:n] =
lengths[:n]``) instead of a Python loop.

``load()`` returns None where the platform lacks recvmmsg/sendmmsg; the daemon
then uses the portable path (daemon/plainpath.py).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
import sys
from ctypes import c_int, c_size_t, c_uint, c_uint32, c_void_p, sizeof
from typing import Optional

from .ancillary import parse_ip_cmsgs

NAME_SIZE = 32  # room for a sockaddr_in6 (28 bytes): the same buffers serve IPv6 later
# The kernel's receive time, in_pktinfo and TTL: CMSG_SPACE(16) + CMSG_SPACE(12) +
# CMSG_SPACE(4) = 88 on 64-bit (a cmsg that does not fit is cut, MSG_CTRUNC).
CONTROL_SIZE = 96
PAYLOAD_STRIDE = 65536  # above any IPv4 UDP payload: a datagram is never cut unseen
RETRY_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})
# A sockaddr_in's first word, sin_family then sin_port, for source port 0 (family_ports).
NO_PORT_WORD = struct.unpack("=I", struct.pack("=HH", socket.AF_INET, 0))[0]


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", c_void_p), ("iov_len", c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", c_void_p), ("msg_namelen", c_uint32), ("msg_iov", c_void_p),
                ("msg_iovlen", c_size_t), ("msg_control", c_void_p),
                ("msg_controllen", c_size_t), ("msg_flags", c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", c_uint)]


HDR_SIZE = sizeof(MMsgHdr)
HDR_WORDS = HDR_SIZE // 4  # the header array read as 32-bit words
LEN_WORD = MMsgHdr.msg_len.offset // 4
FLAGS_WORD = MsgHdr.msg_flags.offset // 4
IOV_SIZE = sizeof(IoVec)
# An echo's length goes into the low 32 bits of its iov_len (the high ones stay 0: a
# datagram is under 64 KiB), so that it is one 32-bit word, like the received msg_len.
SEND_LENGTH_WORD = (IoVec.iov_len.offset
                    + (sizeof(c_size_t) - 4 if sys.byteorder == "big" else 0)) // 4

_calls: Optional[tuple] = None


def load() -> bool:
    """Whether recvmmsg and sendmmsg can be called here (loaded once)."""
    global _calls
    if _calls is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
        except (OSError, AttributeError):
            _calls = ()
            return False
        recvmmsg.argtypes = [c_int, c_void_p, c_uint, c_int, c_void_p]
        recvmmsg.restype = c_int
        sendmmsg.argtypes = [c_int, c_void_p, c_uint, c_int]
        sendmmsg.restype = c_int
        _calls = (recvmmsg, sendmmsg)
    return bool(_calls)


def _buffer(size: int) -> tuple[bytearray, int, object]:
    """A zeroed bytearray, its address, and the ctypes view that keeps the address valid."""
    data = bytearray(size)
    view = (ctypes.c_char * size).from_buffer(data)
    return data, ctypes.addressof(view), view


class Batch:
    def __init__(self, size: int = 64) -> None:
        if not load():
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        self.size = size
        self._recvmmsg, self._sendmmsg = _calls  # type: ignore[misc]
        self._payloads = mmap.mmap(-1, size * PAYLOAD_STRIDE)
        self._payload_view = (ctypes.c_char * (size * PAYLOAD_STRIDE)).from_buffer(
            self._payloads)
        payloads = ctypes.addressof(self._payload_view)
        self.names, names, self._keep_names = _buffer(size * NAME_SIZE)
        self.control, control, self._keep_control = _buffer(size * CONTROL_SIZE)
        recv_iov, recv_iov_at, self._keep_recv_iov = _buffer(size * sizeof(IoVec))
        send_iov, send_iov_at, self._keep_send_iov = _buffer(size * sizeof(IoVec))
        self.recv_hdrs, self._recv_at, self._keep_recv = _buffer(size * HDR_SIZE)
        send_hdrs, self._send_at, self._keep_send = _buffer(size * HDR_SIZE)
        iov = IOV_SIZE
        for i in range(size):
            struct.pack_into("@PN", recv_iov, i * iov, payloads + i * PAYLOAD_STRIDE,
                             PAYLOAD_STRIDE)
            struct.pack_into("@PN", send_iov, i * iov, payloads + i * PAYLOAD_STRIDE, 0)
            _pack_header(self.recv_hdrs, i, names + i * NAME_SIZE, NAME_SIZE,
                         recv_iov_at + i * iov, control + i * CONTROL_SIZE, CONTROL_SIZE)
            _pack_header(send_hdrs, i, names + i * NAME_SIZE, 16, send_iov_at + i * iov, 0, 0)
        self._send_iov, self._send_hdrs = send_iov, send_hdrs
        self._pristine = bytes(self.recv_hdrs)  # what a receive resets the headers to
        self._used = 0
        # Views for the caller (see the module doc).
        self.words = memoryview(self.recv_hdrs).cast("I")
        self.name_bytes = memoryview(self.names)
        self.name_words = memoryview(self.names).cast("I")
        self.payload_words = memoryview(self._payloads).cast("I")
        self.payloads = memoryview(self._payloads)
        self.send_length_words = memoryview(send_iov).cast("I")
        self.lengths = self.words[LEN_WORD::HDR_WORDS]
        self.first_octets = self.name_bytes[4::NAME_SIZE]  # sin_addr's first byte
        self.sources = self.name_words[1::NAME_SIZE // 4]  # sin_addr as one raw integer
        self.family_ports = self.name_words[0::NAME_SIZE // 4]  # sin_family and sin_port
        # sin_port's first byte (network order: the high one): no 0 there, no port below 256,
        # so no port 0 -- a byte view, whose items are Python's cached small integers
        self.port_high_bytes = self.name_bytes[2::NAME_SIZE]
        self.first_payload_words = self.payload_words[:: PAYLOAD_STRIDE // 4]
        self.send_lengths = self.send_length_words[SEND_LENGTH_WORD :: IOV_SIZE // 4]

    def receive(self, fd: int) -> int:
        """Datagrams now in the buffers (0 when none is queued). OSError on a real error."""
        if self._used:  # recvmmsg rewrote name and control lengths and flags: reset them
            self.recv_hdrs[: self._used * HDR_SIZE] = self._pristine[: self._used * HDR_SIZE]
        count = self._recvmmsg(fd, self._recv_at, self.size, socket.MSG_DONTWAIT, None)
        if count < 0:
            self._used = 0
            code = ctypes.get_errno()
            if code in RETRY_ERRNOS:
                return 0
            raise OSError(code, os.strerror(code))
        self._used = count
        return count

    def send(self, fd: int, start: int, count: int) -> tuple[int, int]:
        """Send echoes start..start+count-1 as far as they go: (how many went, errno of the
        one that failed, or 0). The caller skips a failed one and calls again."""
        sent = self._sendmmsg(fd, self._send_at + start * HDR_SIZE, count, 0)
        if sent < 0:
            return 0, ctypes.get_errno()
        return sent, 0

    def payload(self, index: int, length: int) -> bytes:
        start = index * PAYLOAD_STRIDE
        return bytes(self.payloads[start : start + length])

    def set_payload(self, index: int, data: bytes) -> None:
        start = index * PAYLOAD_STRIDE
        self.payloads[start : start + len(data)] = data

    def peer(self, index: int) -> tuple[str, int]:
        """The sender of datagram *index* as (address, port), for log lines."""
        base = index * NAME_SIZE
        port = self.names[base + 2] << 8 | self.names[base + 3]
        return socket.inet_ntoa(bytes(self.names[base + 4 : base + 8])), port

    def ancillary(self, index: int) -> tuple[Optional[int], Optional[int], Optional[int]]:
        """(arrival interface index, arrival TTL, the kernel's receive time in ns) from
        IP_PKTINFO / IP_TTL / SO_TIMESTAMPNS, None if absent (net/ancillary.py walks the
        control buffer). Read only for probes."""
        length = struct.unpack_from("@N", self.recv_hdrs,
                                    index * HDR_SIZE + MsgHdr.msg_controllen.offset)[0]
        return parse_ip_cmsgs(self.control, index * CONTROL_SIZE, min(length, CONTROL_SIZE))


def _pack_header(buffer: bytearray, index: int, name: int, namelen: int, iov: int,
                 control: int, controllen: int) -> None:
    base = index * HDR_SIZE
    struct.pack_into("@P", buffer, base + MsgHdr.msg_name.offset, name)
    struct.pack_into("=I", buffer, base + MsgHdr.msg_namelen.offset, namelen)
    struct.pack_into("@P", buffer, base + MsgHdr.msg_iov.offset, iov)
    struct.pack_into("@N", buffer, base + MsgHdr.msg_iovlen.offset, 1)
    struct.pack_into("@P", buffer, base + MsgHdr.msg_control.offset, control)
    struct.pack_into("@N", buffer, base + MsgHdr.msg_controllen.offset, controllen)
