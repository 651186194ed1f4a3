"""RFC 6450, the Multicast Ping Protocol: messages, options and the server's answers.

Codes and rules are RFC 6450's; section numbers are cited where each is used. Framing
is tlv.py's (sections 3.1, 3.3). Message types (3.3): 'Q' (81) Echo Request, 'A' (65)
Echo Reply, 'I' (73) Init, 'S' (83) Server Response. Options (3.2, 7): 0 Version,
1 Client ID, 2 Sequence Number, 3 Client Timestamp, 4 Multicast Group, 5 Option
Request, 6 Server Information, 7 and 8 deprecated (ssmping's; echoed as unknown),
9 TTL, 10 Multicast Prefix, 11 Session ID, 12 Server Timestamp.

What omping (a draft-08 implementation) sends, read from its msg.c and tlv.c: Version 2
in every message; Init = Version, Client ID, [Option Request (6)], one Multicast Prefix
with a full address and full prefix length; Echo Request = Version, Client ID, Sequence,
Client Timestamp, Multicast Group (2-byte family, lengths 6/18), [Option Request (12)],
Session ID -- zero bytes long when it was given none. Accepted too: the 1-byte-family
group form of ssmping 0.9.1 (lengths 5/17), and an empty Option Request (ssmping's
version request, TLV 5 of length 0), which requests nothing.

Size (the *_GROWTH constants below): an Echo Reply is the request less any Session ID,
plus TTL (5 bytes) and, when asked for, a Server Timestamp (12): ECHO_GROWTH 17. A
Server Response refusing a message carries only options copied from it and a Version
(5), which the message may lack: REFUSAL_GROWTH 5 (a 1-byte 'I' gets 6 bytes). A Server
Response to an Init adds at most a group (22), a Session ID (12) and, when asked for,
Server Information (4 + MAX_TEXT), for which the Init carries at least a prefix (7) and
an Option Request (6): INIT_GROWTH 89.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import NamedTuple, Optional

from .tlv import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    MAX_TEXT,
    IPAddress,
    Malformed,
    Reply,
    Responder,
    client_address,
    decode_group,
    encode_group,
    encode_option,
    group_allowed,
    parse_checked,
    read_timestamp,
    single_value,
    text,
    timestamp,
)

# Message types, section 3.3.
ECHO_REQUEST = ord("Q")
ECHO_REPLY = ord("A")
INIT = ord("I")
SERVER_RESPONSE = ord("S")

# Option types, sections 3.2 and 7.
VERSION = 0
CLIENT_ID = 1
SEQUENCE = 2
CLIENT_TIMESTAMP = 3
GROUP = 4
OPTION_REQUEST = 5
SERVER_INFORMATION = 6
DEPRECATED_7 = 7
DEPRECATED_8 = 8
TTL = 9
PREFIX = 10
SESSION_ID = 11
SERVER_TIMESTAMP = 12

PROTOCOL_VERSION = 2  # section 3.2, Version
PORT = 9903  # section 7
SESSION_ID_SIZE = 8  # section 3.2, Session ID: at least 4 bytes, hard to predict

# Section 3.4's matrix: options a server never echoes into an Echo Reply. Session ID is
# never echoed (3.4, 5); Server Information and Multicast Prefix are "NOT" in an Echo
# Reply; TTL and Server Timestamp are the server's own, appended after the echo (a copy
# would repeat them, and 3 forbids an option twice).
_NOT_ECHOED = frozenset({SESSION_ID, SERVER_INFORMATION, PREFIX, TTL, SERVER_TIMESTAMP})
# Fixed lengths, section 3.2; a known option of another length makes the message malformed.
_FIXED_LENGTHS = {VERSION: 1, SEQUENCE: 4, CLIENT_TIMESTAMP: 8, TTL: 1, SERVER_TIMESTAMP: 8}
_PREFIX_BOUNDS = {FAMILY_IPV4: (4, 32), FAMILY_IPV6: (8, 128)}  # shortest, longest length
_U32 = struct.Struct("!I")

# The most each reply outgrows its request: what the server adds, less what the request
# needs to carry to get it added (the request's own Version, Client ID and Sequence come
# back as sent, and an Echo Reply echoes the Option Request).
_VERSION_SIZE = 4 + 1
REFUSAL_GROWTH = _VERSION_SIZE  # a Server Response to a message without Version: 'I' alone
ECHO_GROWTH = (4 + 1) + (4 + 8)  # TTL, and the Server Timestamp that was asked for
INIT_GROWTH = ((4 + 2 + 16) + (4 + SESSION_ID_SIZE) + (4 + MAX_TEXT)  # group, Session ID,
               - (4 + 3) - (4 + 2))  # Server Information; less a wildcard prefix, a request
MAX_GROWTH = max(REFUSAL_GROWTH, ECHO_GROWTH, INIT_GROWTH)


class Prefix(NamedTuple):
    """A Multicast Prefix option (section 3.2): family, length, and the addresses it spans
    (as integers: what the server's group index looks up, no network object per prefix)."""

    family: int  # IANA address family
    length: int  # 0 = wildcard: any group of the family
    span: Optional[tuple[int, int]]  # first and last address; None: wildcard or other family


class Message(NamedTuple):
    """A decoded message of any of the four types."""

    type: int
    options: tuple  # Option, ...: every option, in order
    version: Optional[int]
    client_id: Optional[bytes]
    seq: Optional[int]
    group: Optional[IPAddress]
    requested: frozenset  # option types asked for by Option Request
    prefixes: tuple  # Prefix, ... in the client's order of preference (3.4, Init)
    session_id: Optional[bytes]  # None when absent or empty (omping sends it empty)
    ttl: Optional[int]
    client_time_ns: Optional[int]
    server_time_ns: Optional[int]
    server_info: Optional[str]


def _prefix(value: bytes) -> Prefix:
    """Section 3.2, Multicast Prefix: u16 family, u8 length, as many address bytes as the
    length needs (a longer address is fine; bits past the length are ignored)."""
    if len(value) < 3:
        raise Malformed(f"prefix option of {len(value)} bytes")
    family, length = int.from_bytes(value[:2], "big"), value[2]
    bounds = _PREFIX_BOUNDS.get(family)
    if bounds is None or length == 0:
        return Prefix(family, length, None)
    shortest, longest = bounds
    size = longest // 8
    if not shortest <= length <= longest or not (length + 7) // 8 <= len(value) - 3 <= size:
        raise Malformed(f"prefix option: family {family}, length {length}, "
                        f"{len(value) - 3} address bytes")
    address = int.from_bytes(bytes(value[3:]).ljust(size, b"\0"), "big")
    host_bits = longest - length
    first = address >> host_bits << host_bits
    return Prefix(family, length, (first, first | ((1 << host_bits) - 1)))


def _requested(value: bytes) -> frozenset:
    if len(value) % 2:
        raise Malformed(f"option request of {len(value)} bytes (an even number expected)")
    return frozenset(struct.unpack(f"!{len(value) // 2}H", value))


def parse(data: bytes) -> Message:
    """Decode a message; Malformed if a known option is repeated (section 3 forbids it,
    Multicast Prefix apart) or has the wrong form. Unknown options are kept, unread."""
    if not data:
        raise Malformed("empty datagram")
    options = parse_checked(data, _FIXED_LENGTHS)

    def value(kind: int) -> Optional[bytes]:
        return single_value(options, kind)

    version, client_id, seq = value(VERSION), value(CLIENT_ID), value(SEQUENCE)
    group, request, session = value(GROUP), value(OPTION_REQUEST), value(SESSION_ID)
    ttl, client_time, server_time = value(TTL), value(CLIENT_TIMESTAMP), value(SERVER_TIMESTAMP)
    info = value(SERVER_INFORMATION)
    return Message(
        data[0], options,
        None if version is None else version[0],
        client_id,
        None if seq is None else _U32.unpack(seq)[0],
        None if group is None else decode_group(group),
        frozenset() if request is None else _requested(request),
        tuple(_prefix(option.value) for option in options if option.type == PREFIX),
        session or None,
        None if ttl is None else ttl[0],
        None if client_time is None else read_timestamp(client_time),
        None if server_time is None else read_timestamp(server_time),
        None if info is None else info.decode("utf-8", "replace"),
    )


def session_id(key: bytes, client: IPAddress, group: IPAddress) -> bytes:
    """The Session ID for *client* and *group* (section 3.2: hard to predict, at least 4
    bytes): a keyed hash, so the server checks it without keeping per-client state."""
    digest = hmac.new(key, b"rfc6450 " + client.packed + group.packed, hashlib.sha256)
    return digest.digest()[:SESSION_ID_SIZE]


def _copied(message: Message, *kinds: int) -> bytes:
    return b"".join(option.raw for option in message.options if option.type in kinds)


def server_response(message: Message, extra: bytes = b"") -> bytes:
    """A Server Response (section 3.4): Version 2, the Client ID and Sequence Number
    echoed when present, then *extra*. With no group in it, it refuses: to an Echo
    Request it says stop (sections 4, 5); for a wrong version, it is all section 3.2
    (Version) allows ("The server SHOULD NOT include any other options")."""
    return (bytes([SERVER_RESPONSE]) + encode_option(VERSION, bytes([PROTOCOL_VERSION]))
            + _copied(message, CLIENT_ID) + _copied(message, SEQUENCE) + extra)


def echo_reply(message: Message, ttl: int, now_ns: int) -> bytes:
    """Section 3: "the exact options from the request (in the same order), and then ...
    any options appended by the server" -- less those section 3.4 keeps out of a reply,
    then TTL (3.2, TTL) and, when asked for, Server Timestamp (3.2, Option Request)."""
    echoed = b"".join(option.raw for option in message.options
                      if option.type not in _NOT_ECHOED)
    reply = bytes([ECHO_REPLY]) + echoed + encode_option(TTL, bytes([ttl & 0xFF]))
    if SERVER_TIMESTAMP in message.requested:
        reply += encode_option(SERVER_TIMESTAMP, timestamp(now_ns))
    return reply


def offered_group(message: Message, client: IPAddress,
                  responder: Responder) -> Optional[IPAddress]:
    """The group an Init gets: the first configured group of the client's family inside
    the first prefix that has one (section 3.4, Init: prefixes in order of preference;
    section 5). None when the Init names no prefix, or none matches: a refusal. Each
    prefix costs a lookup in the responder's index, not a pass over its groups."""
    family = FAMILY_IPV4 if client.version == 4 else FAMILY_IPV6
    for prefix in message.prefixes:
        if prefix.family == family:
            group = responder.groups.first_in(client.version, prefix.span)
            if group is not None:
                return group
    return None


def answer(data: bytes, client: str, now_ns: int, responder: Responder) -> tuple:
    """The replies to one datagram from *client*: () for anything but an Init or an Echo
    Request. Raises Malformed for one that cannot be parsed, or lacks what section 3.4
    says it MUST have (an Echo Request's Sequence Number and Multicast Group)."""
    if not data or data[0] not in (INIT, ECHO_REQUEST):
        return ()  # replies and responses, ours looped back included, are never answered
    message = parse(data)
    if message.version != PROTOCOL_VERSION:
        return (Reply(server_response(message)),)  # section 3.2, Version
    address = client_address(client)
    if message.type == INIT:
        return (Reply(_init_response(message, address, responder)),)
    if message.seq is None or message.group is None:
        raise Malformed("echo request without a sequence number or a group")
    expected = (None if responder.session_key is None
                else session_id(responder.session_key, address, message.group))
    if not group_allowed(message.group, address, responder) or (
            expected is not None
            and not hmac.compare_digest(message.session_id or b"", expected)):
        return (Reply(server_response(message)),)  # section 5: bad group or Session ID
    reply = echo_reply(message, responder.ttl, now_ns)
    return (Reply(reply), Reply(reply, message.group))  # section 2: unicast and multicast


def _init_response(message: Message, client: IPAddress, responder: Responder) -> bytes:
    """Section 5: the group found for the Init's prefixes, a Session ID with it, and
    Server Information when the Init asked for it (section 3.2, Option Request)."""
    extra = b""
    group = offered_group(message, client, responder)
    if group is not None:
        extra += encode_option(GROUP, encode_group(group, 2))
        if responder.session_key is not None:
            extra += encode_option(SESSION_ID,
                                   session_id(responder.session_key, client, group))
    if SERVER_INFORMATION in message.requested and responder.server_info:
        extra += encode_option(SERVER_INFORMATION, text(responder.server_info))
    return server_response(message, extra)


# --- client side ---------------------------------------------------------------------

def build_init(client_id: bytes, prefixes: tuple = (), *, want_info: bool = False) -> bytes:
    """An Init (section 3.4): Version, Client ID, [Option Request], the prefixes -- each
    an (IPv4Network / IPv6Network) or a family number alone for a wildcard (section 4)."""
    parts = [bytes([INIT]), encode_option(VERSION, bytes([PROTOCOL_VERSION])),
             encode_option(CLIENT_ID, client_id)]
    if want_info:
        parts.append(encode_option(OPTION_REQUEST, struct.pack("!H", SERVER_INFORMATION)))
    for prefix in prefixes:
        if isinstance(prefix, int):
            parts.append(encode_option(PREFIX, struct.pack("!HB", prefix, 0)))
            continue
        family = FAMILY_IPV4 if prefix.version == 4 else FAMILY_IPV6
        used = (prefix.prefixlen + 7) // 8
        parts.append(encode_option(PREFIX, struct.pack("!HB", family, prefix.prefixlen)
                                   + prefix.network_address.packed[:used]))
    return b"".join(parts)


def build_echo_request(client_id: bytes, seq: int, sent_ns: int, group: IPAddress, *,
                       session: Optional[bytes] = None, want_time: bool = False) -> bytes:
    """An Echo Request (section 3.4): Version, Client ID, Sequence Number, Client
    Timestamp, Multicast Group, [Option Request for Server Timestamp], [Session ID]."""
    parts = [bytes([ECHO_REQUEST]), encode_option(VERSION, bytes([PROTOCOL_VERSION])),
             encode_option(CLIENT_ID, client_id),
             encode_option(SEQUENCE, _U32.pack(seq & 0xFFFFFFFF)),
             encode_option(CLIENT_TIMESTAMP, timestamp(sent_ns)),
             encode_option(GROUP, encode_group(group, 2))]
    if want_time:
        parts.append(encode_option(OPTION_REQUEST, struct.pack("!H", SERVER_TIMESTAMP)))
    if session:
        parts.append(encode_option(SESSION_ID, session))
    return b"".join(parts)
