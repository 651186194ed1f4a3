"""The legacy ssmping 0.9.1 dialect, as Debian's ssmping, asmping and ssmpingd speak it.

Every code and rule here is ssmping 0.9.1's own (ssmping.h, ssmpngcl.c ``initsendbuf``
and ``parsepacket``, ssmpingd.c ``parsequery`` and ``respond``): byte 0 is 'Q' for a
request or 'A' for a reply, then TLVs (tlv.py). The options:

  1 PID (u32)            2 sequence (u32)           3 timestamp (u32 s, u32 us)
  4 group (u8 family: 1 = IPv4, 2 = IPv6; then the address)
  5 version request (empty)                          6 server version (text)
  7 reply size (u16)     8 pad (zero bytes)

What the real clients send (traced, Debian ssmping 0.9.1-4): ``1, 2, 3, [5], [7], 4`` --
5 only with ``-v``, 7 only with ``-s SIZE`` (any 1..65535), and always the group: for
ssmping 232.43.211.234 or ff3e::4321:1234, for asmping the group given. A 48-byte
``ssmping -4 -v -s 100`` request is the test vector.

The reply is the request with byte 0 set to 'A' and every option copied verbatim (unknown
ones too), then the server version if option 5 was present, then -- ssmpingd's rule -- a
pad option filling the reply to the size option 7 asked for. It goes unicast to the client
and to the group of option 4 (ssmpingd's default group when absent), on the client's port.

**Amplification bound.** ssmpingd pads up to any asked size (65535 bytes for a 41-byte
request, twice). This responder pads only up to the request's own size, so option 7 is
echoed but in effect never honoured: a reply is at most the request plus the server
version option (4 + MAX_TEXT = 68 bytes). ``ssmping -s N`` then prints "Warning,
requested packet size N, got M" and counts the replies as usual. (The real client reads
replies into 1,024 bytes, so even ssmpingd's larger replies reach it cut.)
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple, Optional

from ..addresses import SSMPING_GROUP_V4, SSMPING_GROUP_V6
from .tlv import (
    MAX_TEXT,
    IPAddress,
    Malformed,
    Reply,
    Responder,
    client_address,
    decode_group,
    encode_group,
    encode_option,
    fits,
    group_allowed,
    parse_checked,
    read_timestamp,
    single_value,
    text,
    timestamp,
)

REQUEST = ord("Q")
REPLY = ord("A")
# The most a reply outgrows its request: the server version option (a 5-byte 'Q' that
# asks for it gets 5 + 4 + the version text back, twice: unicast and to the group).
MAX_GROWTH = 4 + MAX_TEXT

PID = 1
SEQ = 2
TIMESTAMP = 3
GROUP = 4
VERSION_REQUEST = 5
SERVER_VERSION = 6
REPLY_SIZE = 7
PAD = 8

PORT = 4321  # ssmpingd's port, and the clients' default
# ssmping's groups when none is given, and ssmpingd's when a request names none.
DEFAULT_GROUPS = {4: ipaddress.IPv4Address(SSMPING_GROUP_V4),
                  6: ipaddress.IPv6Address(SSMPING_GROUP_V6)}

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_FIXED_LENGTHS = {PID: 4, SEQ: 4, TIMESTAMP: 8, REPLY_SIZE: 2}


class Message(NamedTuple):
    """A decoded ssmping request or reply."""

    type: int  # REQUEST or REPLY
    options: tuple  # Option, ...: every option, in order
    pid: Optional[int]
    seq: Optional[int]
    sent_ns: Optional[int]  # the client's timestamp, as nanoseconds since 1970
    group: Optional[IPAddress]
    wants_version: bool  # option 5
    reply_size: Optional[int]  # option 7
    server_version: Optional[str]  # option 6 (replies)


def parse(data: bytes) -> Message:
    """Decode a request or reply; Malformed if it is neither, or its options are bad.

    Stricter than ssmpingd, which answers anything starting with 'Q': a datagram whose
    options do not fill it exactly, or that gives the group or size twice, is refused.
    """
    if not data or data[0] not in (REQUEST, REPLY):
        raise Malformed("not an ssmping message")
    options = parse_checked(data, _FIXED_LENGTHS)

    def number(kind: int) -> Optional[int]:
        value = single_value(options, kind)
        return None if value is None else int.from_bytes(value, "big")

    group, sent = single_value(options, GROUP), single_value(options, TIMESTAMP)
    version = single_value(options, SERVER_VERSION)
    return Message(
        data[0], options, number(PID), number(SEQ),
        None if sent is None else read_timestamp(sent),
        None if group is None else decode_group(group),
        any(option.type == VERSION_REQUEST for option in options),
        number(REPLY_SIZE),
        None if version is None else version.decode("utf-8", "replace"),
    )


def build_reply(request: bytes, message: Message, server_version: str,
                size_limit: int) -> bytes:
    """The reply to a parsed *request*: ssmpingd's ``respond``, with padding honoured
    only up to *size_limit* bytes."""
    reply = bytes([REPLY]) + bytes(request[1:])
    if message.wants_version:
        version = encode_option(SERVER_VERSION, text(server_version))
        if fits(len(reply) + len(version)):
            reply += version
    asked = message.reply_size or 0
    if len(reply) + 4 <= asked <= size_limit and fits(asked):
        reply += encode_option(PAD, bytes(asked - len(reply) - 4))
    return reply


def answer(data: bytes, client: str, responder: Responder) -> tuple:
    """The replies to one datagram from *client*: () for anything but a request.

    Raises Malformed for a request that cannot be parsed (no reply is sent to it).
    The reply goes unicast, and to the request's group (or the default group of the
    client's family, when it names none) only if that group is one of
    ``responder.groups``: ssmpingd's own check (a group ending in .234 or
    ::4321:1234) would reflect to any such group, ours to configured ones only.
    """
    if not data or data[0] != REQUEST:
        return ()  # a reply (maybe our own, looped back) or no ssmping: never answered
    message = parse(data)
    payload = build_reply(data, message, responder.server_info, size_limit=len(data))
    address = client_address(client)
    group = message.group if message.group is not None else DEFAULT_GROUPS[address.version]
    replies = [Reply(payload)]
    if group_allowed(group, address, responder):
        replies.append(Reply(payload, group))
    return tuple(replies)


# --- client side ---------------------------------------------------------------------

def build_request(pid: int, seq: int, sent_ns: int, group: IPAddress, *,
                  want_version: bool = False, reply_size: Optional[int] = None) -> bytes:
    """A request laid out as ssmping 0.9.1 lays it: options 1, 2, 3, [5], [7], 4."""
    parts = [bytes([REQUEST]),
             encode_option(PID, _U32.pack(pid & 0xFFFFFFFF)),
             encode_option(SEQ, _U32.pack(seq & 0xFFFFFFFF)),
             encode_option(TIMESTAMP, timestamp(sent_ns))]
    if want_version:
        parts.append(encode_option(VERSION_REQUEST))
    if reply_size is not None:
        parts.append(encode_option(REPLY_SIZE, _U16.pack(reply_size)))
    parts.append(encode_option(GROUP, encode_group(group, 1)))
    return b"".join(parts)
