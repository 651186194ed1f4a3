"""The ping probe format and the responder's identity trailer (docs/protocol.md).

Both sides of the wire live here: the responder calls ``wants_trailer`` on every
datagram and ``with_trailer`` on those that ask; ``mcast-echo ping`` builds
probes and checks echoes with the rest. Nothing in this module touches a socket.

A probe is a 32-byte header followed by padding up to the probe size. A
responder that honours the "want trailer" flag writes its trailer over the end
of the probe's padding: the probe reserves the room, so **an echo is never
larger than the datagram it answers** (an echo responder must not amplify).
Names that do not fit are cut, the host name first; a probe with less room
than the smallest trailer is echoed verbatim.

The trailer ends in the responder's *residence time* when the probe has room
for it (RESIDENCE_PROBE bytes or more): how long the datagram was inside the
responder, from the kernel's receive timestamp (T2) to the clock read just
before the send that carries the echo (T3), TWAMP/STAMP style (RFC 5357,
RFC 8762). The responder writes it last, with ``stamp_residence`` or
``pack_residence``, into the echo's final 8 bytes; the client subtracts it from
the round trip, so the RTT is the network's, not either end's software.
"""

from __future__ import annotations

import struct
import time
import zlib
from typing import NamedTuple, Optional

from .udp import MAX_UDP_PAYLOAD

PROBE_MAGIC = b"MCEP"
PROBE_VERSION = 1
# 0x01 asked for a trailer *appended* after the probe (the first release): that made
# echoes larger than probes, so it is no longer honoured (such a probe comes back
# verbatim). 0x02 asks for the trailer in the probe's own room.
FLAG_LEGACY_TRAILER = 0x01
FLAG_WANT_TRAILER = 0x02
# magic, version, flags, sent TTL, spread (ms), session, sequence, send time (ns), length
_HEADER_FIELDS = struct.Struct("!4sBBBBIIQI")
# `ping --spread MS`: each responder delays its echo by 0..MS ms, drawn afresh per reply.
# One byte of the header (the first release's reserved 0): 255 ms at most.
MAX_SPREAD_MS = 255
SPREAD_OFFSET = 7
_CRC = struct.Struct("!I")
HEADER_SIZE = _HEADER_FIELDS.size + _CRC.size  # 32: the smallest probe

TRAILER_MAGIC = b"MCET"
TRAILER_VERSION = 1
TRAILER_TTL_KNOWN = 0x01
# The responder also sends its echoes to the group (reply: group or both): a client that
# hears none of them there knows the group path is lost, not unused.
TRAILER_GROUP_ECHOES = 0x04
TRAILER_RESIDENCE = 0x02  # the trailer's last 8 bytes are the residence time (ns)
_RESIDENCE = struct.Struct("!Q")
RESIDENCE_SIZE = _RESIDENCE.size
# magic, version, flags, total trailer length, receive time (ns), arrival TTL
_TRAILER_FIXED = struct.Struct("!4sBBHQB")
MAX_TEXT = 255  # each text field is one length byte + up to 255 bytes of UTF-8
MIN_TRAILER_SIZE = _TRAILER_FIXED.size + 3  # three empty names
MAX_TRAILER_SIZE = _TRAILER_FIXED.size + 3 * (1 + MAX_TEXT)
MIN_TRAILER_PROBE = HEADER_SIZE + MIN_TRAILER_SIZE  # 52: the smallest probe with a trailer
RESIDENCE_PROBE = MIN_TRAILER_PROBE + RESIDENCE_SIZE  # 60: ... with the residence time too
# The longest names Linux gives: a 64-byte host name, a 15-byte interface name, and an
# IPv6 group's text (39): a probe of this size or more carries every name whole.
WHOLE_NAMES_PROBE = RESIDENCE_PROBE + 64 + 15 + 39  # 178

# Padding byte at offset i of a probe with sequence s is (i + s) mod 256, so an
# echo of one probe can never pass for another; slicing this buffer builds it.
_PATTERN = bytes(range(256)) * (MAX_UDP_PAYLOAD // 256 + 2)


class Arrival(NamedTuple):
    """What the responder knows about how a datagram reached it."""

    hostname: str
    ifname: str  # interface the datagram arrived on ("" if unknown)
    group: str  # the group address it was sent to
    ttl: Optional[int]  # IP TTL it arrived with (IP_RECVTTL), None if unknown
    recv_time_ns: int  # kernel's receive time (daemon/receivetimes.py), else now
    group_echoes: bool = False  # the echo also goes to the group (reply: group or both)


class Header(NamedTuple):
    """The decoded, CRC-checked header of a probe."""

    flags: int
    sent_ttl: int  # the sender's IP_MULTICAST_TTL; 0 = not stated
    session: int
    seq: int
    send_time_ns: int  # the sender's CLOCK_REALTIME when it sent the probe
    length: int  # the probe's size in bytes, header and padding included
    spread_ms: int = 0  # delay each echo by 0..spread_ms ms (ping --spread)


class Trailer(NamedTuple):
    """The decoded identity trailer a responder appended to an echo."""

    hostname: str
    ifname: str
    group: str
    arrival_ttl: Optional[int]
    recv_time_ns: int
    residence_ns: Optional[int] = None  # T3 - T2: how long the responder held the probe
    group_echoes: bool = False  # the responder says it also echoes to the group


# --- responder side: must be cheap and must never raise --------------------------------------

def wants_trailer(data: bytes) -> bool:
    """Cheap test, run on every datagram: does this probe ask for the identity trailer?"""
    return (
        len(data) >= MIN_TRAILER_PROBE
        and data[:4] == PROBE_MAGIC
        and data[4] == PROBE_VERSION
        and bool(data[5] & FLAG_WANT_TRAILER)
    )


def with_trailer(data: bytes, arrival: Arrival) -> bytes:
    """The echo of a probe that asked for a trailer: its header and padding, with the
    trailer written over the padding's end -- exactly ``len(data)`` bytes. When it is
    RESIDENCE_PROBE bytes or more (and not returned verbatim), its last 8 bytes are the
    residence time's room: stamp it just before the send.

    Anything that is not a well-formed probe (bad CRC, length field that does not
    match the datagram) comes back verbatim; this never raises.
    """
    try:
        header = parse_header(data)
        if header is None or header.length != len(data):
            return data
        trailer = encode_trailer(arrival, len(data) - HEADER_SIZE)
        return data[: len(data) - len(trailer)] + trailer
    except Exception:  # a peer's bytes or odd Arrival values must never stop the responder
        return data


def spread_of(data: bytes) -> int:
    """The delay range (ms) a probe asks for; only for one ``with_trailer`` found valid."""
    return data[SPREAD_OFFSET]


def _utf8(value: object, limit: int) -> bytes:
    """*value* as UTF-8, cut to *limit* bytes on a character boundary."""
    raw = str(value or "").encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", "ignore").encode("utf-8")


def encode_trailer(arrival: Arrival, room: int = MAX_TRAILER_SIZE) -> bytes:
    """The trailer, at most *room* bytes (b"" if not even empty names fit), ending in
    an unstamped residence time (0) when there is room for it.

    Names are fitted in the order group, interface, host name: the group and
    interface are short and say where the probe arrived; a long host name is cut.
    """
    if room < MIN_TRAILER_SIZE:
        return b""
    residence = room >= MIN_TRAILER_SIZE + RESIDENCE_SIZE
    left = room - MIN_TRAILER_SIZE - (RESIDENCE_SIZE if residence else 0)
    names = {}
    for field in ("group", "ifname", "hostname"):
        names[field] = _utf8(getattr(arrival, field), min(MAX_TEXT, left))
        left -= len(names[field])
    body = b"".join(bytes([len(names[f])]) + names[f] for f in ("hostname", "ifname", "group"))
    if residence:
        body += bytes(RESIDENCE_SIZE)
    ttl_known = arrival.ttl is not None and 0 <= arrival.ttl <= 255
    fixed = _TRAILER_FIXED.pack(
        TRAILER_MAGIC,
        TRAILER_VERSION,
        (TRAILER_TTL_KNOWN if ttl_known else 0) | (TRAILER_RESIDENCE if residence else 0)
        | (TRAILER_GROUP_ECHOES if arrival.group_echoes else 0),
        _TRAILER_FIXED.size + len(body),
        arrival.recv_time_ns & 0xFFFF_FFFF_FFFF_FFFF,
        arrival.ttl if ttl_known else 0,
    )
    return fixed + body


def stamp_residence(echo: bytes, received_ns: int) -> tuple[bytes, int]:
    """*echo* (from ``with_trailer``, RESIDENCE_PROBE bytes or more) with its residence
    time -- now, read here just before the caller's send, minus *received_ns* (T2) --
    and that residence time in ns."""
    residence_ns = max(0, time.time_ns() - received_ns)
    return echo[:-RESIDENCE_SIZE] + _RESIDENCE.pack(residence_ns), residence_ns


def pack_residence(buffer: object, end: int, received_ns: int, now_ns: int) -> int:
    """Write *now_ns* - *received_ns* (T3 - T2, never negative) into the 8 bytes before
    *end* of *buffer*, and return it: a batch's echoes are stamped with one clock read
    before their send."""
    residence_ns = max(0, now_ns - received_ns)
    _RESIDENCE.pack_into(buffer, end - RESIDENCE_SIZE, residence_ns)
    return residence_ns


# --- client side ------------------------------------------------------------------------------

def padding(seq: int, start: int, end: int) -> bytes:
    """The padding bytes a probe with sequence *seq* carries at offsets start..end-1."""
    first = (start + seq) % 256
    return _PATTERN[first : first + end - start]


def build_probe(session: int, seq: int, send_time_ns: int, size: int, sent_ttl: int = 0,
                flags: int = FLAG_WANT_TRAILER, spread_ms: int = 0) -> bytes:
    """A probe of exactly *size* bytes (HEADER_SIZE..MAX_UDP_PAYLOAD)."""
    if not HEADER_SIZE <= size <= MAX_UDP_PAYLOAD:
        raise ValueError(f"probe size {size} is out of range {HEADER_SIZE}..{MAX_UDP_PAYLOAD}")
    if not 0 <= spread_ms <= MAX_SPREAD_MS:
        raise ValueError(f"spread {spread_ms} ms is out of range 0..{MAX_SPREAD_MS}")
    fields = _HEADER_FIELDS.pack(PROBE_MAGIC, PROBE_VERSION, flags, sent_ttl, spread_ms,
                                 session, seq, send_time_ns, size)
    return fields + _CRC.pack(zlib.crc32(fields)) + padding(seq, HEADER_SIZE, size)


def parse_header(data: bytes) -> Optional[Header]:
    """The header of a probe, or None when *data* does not start with a valid one."""
    if len(data) < HEADER_SIZE or data[:4] != PROBE_MAGIC or data[4] != PROBE_VERSION:
        return None
    fields = bytes(data[: _HEADER_FIELDS.size])
    (crc,) = _CRC.unpack_from(data, _HEADER_FIELDS.size)
    if zlib.crc32(fields) != crc:
        return None
    _magic, _version, flags, sent_ttl, spread_ms, session, seq, send_time_ns, length = (
        _HEADER_FIELDS.unpack(fields))
    return Header(flags, sent_ttl, session, seq, send_time_ns, length, spread_ms)


def parse_trailer(data: bytes) -> Optional[Trailer]:
    """Decode a trailer that spans all of *data*; None if it is not one.

    Fields a later version appends after the known ones are skipped (the length
    says where the trailer ends).
    """
    if len(data) < _TRAILER_FIXED.size or data[:4] != TRAILER_MAGIC:
        return None
    _magic, version, flags, length, recv_time_ns, ttl = _TRAILER_FIXED.unpack_from(data)
    if version < 1 or length != len(data):
        return None
    residence_ns = None
    names_end = length
    if flags & TRAILER_RESIDENCE:
        names_end = length - RESIDENCE_SIZE
        if names_end < _TRAILER_FIXED.size + 3:
            return None
        (residence_ns,) = _RESIDENCE.unpack_from(data, names_end)
    texts, offset = [], _TRAILER_FIXED.size
    for _ in range(3):
        if offset >= names_end or offset + 1 + data[offset] > names_end:
            return None
        texts.append(bytes(data[offset + 1 : offset + 1 + data[offset]]).decode("utf-8",
                                                                             "replace"))
        offset += 1 + data[offset]
    hostname, ifname, group = texts
    arrival_ttl = ttl if flags & TRAILER_TTL_KNOWN else None
    return Trailer(hostname, ifname, group, arrival_ttl, recv_time_ns, residence_ns,
                   bool(flags & TRAILER_GROUP_ECHOES))


class Echo(NamedTuple):
    """An echo checked against the probe it claims to answer."""

    header: Header
    trailer: Optional[Trailer]
    truncated: bool  # shorter than the probe
    corrupted: bool  # bytes differ from what was sent, or trailing bytes that are no trailer

    @property
    def intact(self) -> bool:
        return not (self.truncated or self.corrupted)

    @property
    def seq(self) -> int:
        """The sequence number of the probe it answers."""
        return self.header.seq


def check_echo(data: bytes, session: int) -> Optional[Echo]:
    """Match an echo to a probe of *session*; None if it is not an echo of ours.

    A damaged header cannot be matched to a probe, so that echo is also None.
    The trailer, if any, ends the echo and starts with its magic: the padding
    (bytes counting up by one) can never hold "MCET", so the first "MCET" after
    the header is where the trailer begins.
    """
    header = parse_header(data)
    if header is None or header.session != session or header.length < HEADER_SIZE:
        return None
    view = memoryview(data)
    received = min(len(data), header.length)
    trailer = None
    at = data.find(TRAILER_MAGIC, HEADER_SIZE, received)
    padding_end = received if at < 0 else at
    corrupted = (view[HEADER_SIZE:padding_end] != padding(header.seq, HEADER_SIZE, padding_end)
                 or len(data) > header.length)  # an echo is never larger than its probe
    if at >= 0:
        trailer = parse_trailer(view[at:received])
        corrupted = corrupted or trailer is None
    return Echo(header, trailer, len(data) < header.length, corrupted)
