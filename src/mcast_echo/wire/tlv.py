"""What the two multicast ping dialects share: TLV framing, the group option, the reply.

Legacy ssmping 0.9.1 (ssmping.py) and RFC 6450 (rfc6450.py) frame a message the
same way: one message-type byte, then options as TLVs -- u16 type, u16 length, the
value -- big-endian and unpadded (RFC 6450 sections 3.1 and 3.3; ssmping's
``tlvadd``/``parsequery``). Nothing here touches a socket.

A reply never goes anywhere but back to the client's address and source port, or
to a group the responder was configured with (``Responder.groups``) on that same
port: the request names the group, the responder decides whether it may be used.
"""

from __future__ import annotations

import ipaddress
import struct
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Optional, Union

from ..addresses import is_multicast
from .udp import MAX_UDP_PAYLOAD

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_HEADER = struct.Struct("!HH")
# Real clients send at most seven options (ssmping 0.9.1: 1, 2, 3, 5, 7, 4; omping: 0, 1,
# 2, 3, 4, 5, 11). More than this is no client of ours: refused, which also bounds the
# work one datagram can cause.
MAX_OPTIONS = 64
MAX_TEXT = 64  # server version / information strings we send, in bytes
# IANA address family numbers, as both dialects carry them in the group option.
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2
_FAMILIES = {FAMILY_IPV4: (ipaddress.IPv4Address, 4), FAMILY_IPV6: (ipaddress.IPv6Address, 16)}


class Malformed(ValueError):
    """A datagram that is not a well-formed message of the dialect: dropped, not answered."""


class Option(NamedTuple):
    type: int
    value: bytes
    raw: bytes  # the whole TLV as received, header included: echoes copy this verbatim


class Groups:
    """The groups replies may go to, in the configured order (the order an RFC 6450 Init
    is offered them), indexed so that no request costs more with more groups: membership
    is a set lookup, and the first group inside a prefix two bisections of the groups
    sorted by address (those inside a prefix are a run of them) and one pass over that
    run's configured positions, in C. Built once per config."""

    def __init__(self, groups: Iterable[IPAddress]) -> None:
        self.ordered = tuple(dict.fromkeys(groups))
        self._members = frozenset(self.ordered)
        self._sorted: dict[int, tuple[list[int], list[int]]] = {}
        for version in (4, 6):
            ranked = sorted((int(group), position) for position, group
                            in enumerate(self.ordered)
                            if group.version == version and group.is_multicast)
            self._sorted[version] = ([value for value, _ in ranked],
                                     [position for _, position in ranked])

    def __contains__(self, group: object) -> bool:
        return group in self._members

    def first_in(self, version: int, span: Optional[tuple[int, int]]) -> Optional[IPAddress]:
        """The first configured group of IP *version* whose address (as an integer) is in
        *span*, first and last included (None: any of that version); None if there is none.
        O(log n) when there is none."""
        values, positions = self._sorted.get(version, ([], []))
        if span is None:
            low, high = 0, len(values)
        else:
            low, high = bisect_left(values, span[0]), bisect_right(values, span[1])
        return self.ordered[min(positions[low:high])] if low < high else None


@dataclass(frozen=True)
class Responder:
    """How the responder answers: built once from the config, shared by both dialects."""

    groups: Groups  # the only groups replies may go to (a sequence of addresses is indexed)
    ttl: int = 64  # TTL / hop limit the replies are sent with (RFC 6450 TTL option)
    server_info: str = "mcast-echo"  # ssmping server version / RFC 6450 Server Information
    session_key: Optional[bytes] = None  # RFC 6450 Session IDs: None = not issued, not required

    def __post_init__(self) -> None:
        if not isinstance(self.groups, Groups):
            object.__setattr__(self, "groups", Groups(self.groups))


class Reply(NamedTuple):
    """One datagram to send, always to the client's source port."""

    payload: bytes
    group: Optional[IPAddress] = None  # None: unicast back to the client


def parse_options(data: bytes, start: int = 1) -> tuple:
    """The options of *data* from offset *start*; Malformed unless they fill it exactly."""
    options, offset, end = [], start, len(data)
    while offset < end:
        if offset + _HEADER.size > end:
            raise Malformed(f"{end - offset} stray byte(s) after the last option")
        if len(options) == MAX_OPTIONS:
            raise Malformed(f"more than {MAX_OPTIONS} options")
        kind, length = _HEADER.unpack_from(data, offset)
        stop = offset + _HEADER.size + length
        if stop > end:
            raise Malformed(f"option {kind} claims {length} bytes, {end - offset - 4} remain")
        raw = bytes(data[offset:stop])
        options.append(Option(kind, raw[_HEADER.size:], raw))
        offset = stop
    return tuple(options)


def parse_checked(data: bytes, fixed_lengths: dict) -> tuple:
    """parse_options, then Malformed for any option whose type has a fixed length in
    *fixed_lengths* but another length."""
    options = parse_options(data)
    for option in options:
        expected = fixed_lengths.get(option.type)
        if expected is not None and len(option.value) != expected:
            raise Malformed(f"option {option.type} of {len(option.value)} bytes"
                            f" (expected {expected})")
    return options


def single_value(options: tuple, kind: int) -> Optional[bytes]:
    """The value of the option of type *kind* (None if absent; Malformed if repeated)."""
    option = single(options, kind)
    return None if option is None else option.value


def encode_option(kind: int, value: bytes = b"") -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"option {kind} value of {len(value)} bytes does not fit a TLV")
    return _HEADER.pack(kind, len(value)) + value


def single(options: tuple, kind: int) -> Optional[Option]:
    """The option of type *kind*, None if absent; Malformed if it is given twice."""
    found = [option for option in options if option.type == kind]
    if len(found) > 1:
        raise Malformed(f"option {kind} given {len(found)} times")
    return found[0] if found else None


def decode_group(value: bytes) -> IPAddress:
    """A group option's address, in either dialect's form, told apart by length.

    ssmping 0.9.1 writes a 1-byte family (lengths 5 and 17); RFC 6450 section 3.2
    (Multicast Group) and omping a 2-byte family (lengths 6 and 18).
    """
    width = {5: 1, 17: 1, 6: 2, 18: 2}.get(len(value))
    if width is None:
        raise Malformed(f"group option of {len(value)} bytes (expected 5, 6, 17 or 18)")
    family = int.from_bytes(value[:width], "big")
    kind, size = _FAMILIES.get(family, (None, 0))
    if kind is None or len(value) != width + size:
        raise Malformed(f"group option with family {family} and {len(value)} bytes")
    return kind(bytes(value[width:]))


def encode_group(group: IPAddress, family_bytes: int) -> bytes:
    """The group option's value with a *family_bytes*-wide family (1: ssmping, 2: RFC 6450)."""
    family = FAMILY_IPV4 if group.version == 4 else FAMILY_IPV6
    return family.to_bytes(family_bytes, "big") + group.packed


def client_address(client: str) -> IPAddress:
    """The client's address; an IPv4-mapped IPv6 address counts as the IPv4 one."""
    address = ipaddress.ip_address(client.split("%", 1)[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def group_allowed(group: Optional[IPAddress], client: IPAddress, responder: Responder) -> bool:
    """May a reply go to *group*? Only a multicast group of the client's family that the
    responder was configured with: a request can never aim replies anywhere else."""
    return (group is not None and is_multicast(group) and group.version == client.version
            and group in responder.groups)


def text(value: str) -> bytes:
    """A server string as sent: UTF-8, cut to MAX_TEXT bytes on a character boundary."""
    raw = value.encode("utf-8", "replace")[:MAX_TEXT]
    return raw.decode("utf-8", "ignore").encode("utf-8")


def fits(size: int) -> bool:
    return size <= MAX_UDP_PAYLOAD


def timestamp(now_ns: int) -> bytes:
    """The 8-byte time both dialects use: u32 seconds since 1970, u32 microseconds."""
    seconds, rest = divmod(now_ns, 1_000_000_000)
    return struct.pack("!II", seconds & 0xFFFFFFFF, rest // 1000)


def read_timestamp(value: bytes) -> int:
    """An 8-byte timestamp as nanoseconds since 1970 (Malformed if not 8 bytes)."""
    if len(value) != 8:
        raise Malformed(f"timestamp of {len(value)} bytes (expected 8)")
    seconds, micros = struct.unpack("!II", value)
    return seconds * 1_000_000_000 + micros * 1000
