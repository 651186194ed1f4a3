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

A batch is of one family (``ipv6``): an IPv4 one reads each source as one 32-bit
integer (``sources``), an IPv6 one as two 64-bit halves and a scope (``addr_highs``,
``addr_lows``, ``scopes``, native integers of the sockaddr_in6's bytes). Group echoes
(``reply: group`` / ``both``) go out through a second array of send headers that shares
the payloads and echo lengths but names the group on each sender's port, leaving by the
interface the datagram came in on (``aim_at_group``, ``group_ifindexes``): IPv4 through
an IP_PKTINFO per echo, IPv6 through the sockaddr_in6's scope, as the plain path sends
them.

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

from . import ancillary
from .ancillary import parse_ip_cmsgs

NAME_SIZE = 32  # room for a sockaddr_in6 (28 bytes), 8-aligned: its address is words 1-2
SOCKADDR_SIZE = {False: 16, True: 28}  # sockaddr_in, sockaddr_in6
# The kernel's receive time, in6_pktinfo (in_pktinfo's fits) and hop limit or TTL:
# 96 bytes on 64-bit (a cmsg that does not fit is cut, MSG_CTRUNC).
CONTROL_SIZE = ancillary.STAMPED_ARRIVAL_SPACE
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
SIZE_T = sizeof(c_size_t)
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
    def __init__(self, size: int = 64, ipv6: bool = False) -> None:
        if not load():
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        self.size = size
        self.ipv6 = ipv6
        namelen = SOCKADDR_SIZE[ipv6]
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
        # the group echoes' headers: the group's address on each sender's port, and for
        # IPv4 an IP_PKTINFO naming the interface (see the module doc)
        self.group_names, group_names, self._keep_group_names = _buffer(size * NAME_SIZE)
        pktinfo_space = 0 if ipv6 else ancillary.SEND_PKTINFO_SPACE
        group_control, group_control_at, self._keep_group_control = _buffer(
            max(1, size * pktinfo_space))
        group_hdrs, self._group_at, self._keep_group = _buffer(size * HDR_SIZE)
        iov = IOV_SIZE
        for i in range(size):
            struct.pack_into("@PN", recv_iov, i * iov, payloads + i * PAYLOAD_STRIDE,
                             PAYLOAD_STRIDE)
            struct.pack_into("@PN", send_iov, i * iov, payloads + i * PAYLOAD_STRIDE, 0)
            _pack_header(self.recv_hdrs, i, names + i * NAME_SIZE, NAME_SIZE,
                         recv_iov_at + i * iov, control + i * CONTROL_SIZE, CONTROL_SIZE)
            _pack_header(send_hdrs, i, names + i * NAME_SIZE, namelen, send_iov_at + i * iov,
                         0, 0)
            _pack_header(group_hdrs, i, group_names + i * NAME_SIZE, namelen,
                         send_iov_at + i * iov,
                         group_control_at + i * pktinfo_space if pktinfo_space else 0,
                         pktinfo_space)
            if pktinfo_space:
                group_control[i * pktinfo_space:(i + 1) * pktinfo_space] = \
                    ancillary.send_pktinfo_header()
        self._send_iov, self._send_hdrs = send_iov, send_hdrs
        self._group_hdrs, self._group_control = group_hdrs, group_control
        self._group_template = b""  # the group sockaddr the group names hold ...
        self._group_filled = 0  # ... in their first this many entries
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
        # IPv6: sin6_addr as two native 64-bit halves, and sin6_scope_id
        name_halves = memoryview(self.names).cast("Q")
        self.addr_highs = name_halves[1::NAME_SIZE // 8]
        self.addr_lows = name_halves[2::NAME_SIZE // 8]
        self.scopes = self.name_words[6::NAME_SIZE // 4]
        # the source ports as they sit in the names (network order), and the group echoes'
        self.source_ports = memoryview(self.names).cast("H")[1::NAME_SIZE // 2]
        self.group_ports = memoryview(self.group_names).cast("H")[1::NAME_SIZE // 2]
        # the arrival interface, where the first cmsg is the pktinfo (ancillary.py) ...
        control_words = memoryview(self.control).cast("I")
        self.first_cmsg_types = control_words[ancillary.FIRST_CMSG_TYPE_WORD::
                                              CONTROL_SIZE // 4]
        self.arrival_ifindexes = control_words[ancillary.PKTINFO_IFINDEX_WORD[ipv6]::
                                               CONTROL_SIZE // 4]
        # ... and its destination (a shared socket's datagram: which group it came to):
        # IPv4 one raw 32-bit integer (as ``sources``), IPv6 two native 64-bit halves
        self.destinations = control_words[ancillary.PKTINFO_DESTINATION_WORD::
                                          CONTROL_SIZE // 4]
        control_halves = memoryview(self.control).cast("Q")
        self.destination_highs = control_halves[ancillary.PKTINFO_DESTINATION_HALF::
                                                CONTROL_SIZE // 8]
        self.destination_lows = control_halves[ancillary.PKTINFO_DESTINATION_HALF + 1::
                                               CONTROL_SIZE // 8]
        # ... and where a group echo says which interface it leaves by
        if ipv6:
            self.group_ifindexes = memoryview(self.group_names).cast("I")[6::NAME_SIZE // 4]
        else:
            self.group_ifindexes = memoryview(group_control).cast("I")[
                ancillary.SEND_PKTINFO_IFINDEX_WORD::pktinfo_space // 4]
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

    def send_group(self, fd: int, start: int, count: int) -> tuple[int, int]:
        """As send(), the group echoes (aim_at_group) of start..start+count-1."""
        sent = self._sendmmsg(fd, self._group_at + start * HDR_SIZE, count, 0)
        if sent < 0:
            return 0, ctypes.get_errno()
        return sent, 0

    def aim_at_group(self, group: bytes, count: int) -> None:
        """Address the group echoes of the first *count* datagrams to *group* (a sockaddr:
        group_sockaddr()) on each one's source port; their interfaces the caller sets in
        group_ifindexes (from arrival_ifindexes, or each datagram's ancillary())."""
        if group != self._group_template or count > self._group_filled:
            template = group.ljust(NAME_SIZE, b"\0")
            self.group_names[: count * NAME_SIZE] = template * count
            self._group_template, self._group_filled = group, count
        self.group_ports[:count] = self.source_ports[:count]

    def arrivals_in_place(self, count: int) -> bool:
        """Whether arrival_ifindexes[:count] hold the arrival interfaces: every datagram's
        first cmsg is its pktinfo (not so while they carry their receive time)."""
        return set(self.first_cmsg_types[:count]) == {ancillary.PKTINFO_TYPE[self.ipv6]}

    def destination_keys(self, count: int) -> list:
        """Each of the first *count* datagrams' destination address as the shared socket
        keys its groups (ancillary.destination_key): read in place while every pktinfo is the
        first cmsg, else walked from each one's cmsgs (while they carry receive times)."""
        if self.arrivals_in_place(count):
            if self.ipv6:
                return list(zip(self.destination_highs[:count], self.destination_lows[:count]))
            return self.destinations[:count].tolist()
        keys = []
        for index in range(count):
            packed = ancillary.pktinfo_destination(self.control, *self._control_span(index))
            keys.append(None if packed is None else ancillary.destination_key(packed))
        return keys

    def gather(self, source: Batch, indices: list[int]) -> None:
        """Copy datagrams *indices* of *source* (a batch of the same family and size) into
        this one's first len(indices) slots, as recvmmsg would have left them: payload,
        sender, ancillary data, length, flags. A shared socket's batch mixing several
        listeners' datagrams is served a listener at a time this way (sharedsocket.py)."""
        words, source_words = self.words, source.words
        control_length = MsgHdr.msg_controllen.offset
        stride = PAYLOAD_STRIDE
        for slot, index in enumerate(indices):
            length = source.lengths[index]
            self.payloads[slot * stride:slot * stride + length] = \
                source.payloads[index * stride:index * stride + length]
            self.names[slot * NAME_SIZE:(slot + 1) * NAME_SIZE] = \
                source.names[index * NAME_SIZE:(index + 1) * NAME_SIZE]
            self.control[slot * CONTROL_SIZE:(slot + 1) * CONTROL_SIZE] = \
                source.control[index * CONTROL_SIZE:(index + 1) * CONTROL_SIZE]
            here, there = slot * HDR_WORDS, index * HDR_WORDS
            words[here + LEN_WORD] = source_words[there + LEN_WORD]
            words[here + FLAGS_WORD] = source_words[there + FLAGS_WORD]
            here, there = slot * HDR_SIZE + control_length, index * HDR_SIZE + control_length
            self.recv_hdrs[here:here + SIZE_T] = source.recv_hdrs[there:there + SIZE_T]

    def payload(self, index: int, length: int) -> bytes:
        start = index * PAYLOAD_STRIDE
        return bytes(self.payloads[start : start + length])

    def set_payload(self, index: int, data: bytes) -> None:
        start = index * PAYLOAD_STRIDE
        self.payloads[start : start + len(data)] = data

    def peer(self, index: int) -> tuple:
        """The sender of datagram *index* as recvfrom gives it: (address, port), or IPv6's
        (address, port, flowinfo, scope id)."""
        base = index * NAME_SIZE
        names = self.names
        port = names[base + 2] << 8 | names[base + 3]
        if not self.ipv6:
            return socket.inet_ntoa(bytes(names[base + 4 : base + 8])), port
        flowinfo = struct.unpack_from("!I", names, base + 4)[0]
        address = socket.inet_ntop(socket.AF_INET6, bytes(names[base + 8 : base + 24]))
        return address, port, flowinfo, self.scopes[index]

    def source_key(self, index: int) -> int:
        """The source of datagram *index* as policy.py keys it: IPv4 the raw integer of
        its four bytes, IPv6 the big-endian integer of its sixteen."""
        if not self.ipv6:
            return self.sources[index]
        base = index * NAME_SIZE + 8
        return int.from_bytes(self.names[base : base + 16], "big")

    def ancillary(self, index: int) -> tuple[Optional[int], Optional[int], Optional[int]]:
        """(arrival interface index, arrival TTL, the kernel's receive time in ns) from
        IP_PKTINFO / IP_TTL / SO_TIMESTAMPNS, None if absent (net/ancillary.py walks the
        control buffer). Read only for probes."""
        return parse_ip_cmsgs(self.control, *self._control_span(index))

    def _control_span(self, index: int) -> tuple[int, int]:
        """Where datagram *index*'s ancillary data lies in the control buffer: (start, the
        msg_controllen the kernel left, at most its slot)."""
        length = struct.unpack_from("@N", self.recv_hdrs,
                                    index * HDR_SIZE + MsgHdr.msg_controllen.offset)[0]
        return index * CONTROL_SIZE, min(length, CONTROL_SIZE)


def group_sockaddr(group: str, ipv6: bool) -> bytes:
    """The sockaddr of *group* with port 0 and no scope (Batch.aim_at_group)."""
    if ipv6:
        return struct.pack("=HHI16sI", socket.AF_INET6, 0, 0,
                           socket.inet_pton(socket.AF_INET6, group), 0)
    return struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(group))


def _pack_header(buffer: bytearray, index: int, name: int, namelen: int, iov: int,
                 control: int, controllen: int) -> None:
    base = index * HDR_SIZE
    struct.pack_into("@P", buffer, base + MsgHdr.msg_name.offset, name)
    struct.pack_into("=I", buffer, base + MsgHdr.msg_namelen.offset, namelen)
    struct.pack_into("@P", buffer, base + MsgHdr.msg_iov.offset, iov)
    struct.pack_into("@N", buffer, base + MsgHdr.msg_iovlen.offset, 1)
    struct.pack_into("@P", buffer, base + MsgHdr.msg_control.offset, control)
    struct.pack_into("@N", buffer, base + MsgHdr.msg_controllen.offset, controllen)
