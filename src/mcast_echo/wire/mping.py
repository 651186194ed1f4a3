"""One entry point for the multicast ping listener: which dialect, and what to send back.

``answer`` takes a datagram and returns at most MAX_REPLIES replies (one to the
client, one to a configured group), each at most GROWTH[dialect] bytes larger than the
datagram (and never over the largest UDP payload). It never raises: what cannot be
parsed is reported as malformed, for the listener to count and drop.

The dialect: a request carrying a Version option (type 0) is RFC 6450 -- legacy
ssmping defines no option 0 and its clients never send one -- as is an Init ('I'),
which ssmping does not have. Any other 'Q' is legacy ssmping. Replies and responses
('A', 'S') and anything else are not requests: ignored, so two responders can never
answer each other.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import rfc6450, ssmping
from .tlv import MAX_OPTIONS, Malformed, Responder, fits

MAX_REPLIES = 2  # unicast and one group: both dialects send no more
SSMPING = "ssmping"
RFC6450 = "rfc6450"
# The most a reply may outgrow its request, per dialect (see each module): ssmping 68
# bytes (its server version), RFC 6450 89 (an Init's group, Session ID and Server
# Information); MAX_GROWTH is the larger, the bound the README states.
GROWTH = {SSMPING: ssmping.MAX_GROWTH, RFC6450: rfc6450.MAX_GROWTH}
MAX_GROWTH = max(GROWTH.values())

_HEADER = struct.Struct("!HH")


class Answer(NamedTuple):
    dialect: str  # SSMPING, RFC6450, or "" when the datagram is no request of either
    replies: tuple  # Reply, ...: at most MAX_REPLIES
    malformed: bool = False  # a request of *dialect* that was dropped unanswered


def dialect(data: bytes) -> str:
    """SSMPING, RFC6450, or "" for a datagram that is no multicast ping request. Looks only
    at the option headers, so it is cheap and cannot fail."""
    if not data:
        return ""
    if data[0] == rfc6450.INIT:
        return RFC6450
    if data[0] != ssmping.REQUEST:
        return ""
    offset, seen = 1, 0
    while offset + _HEADER.size <= len(data) and seen < MAX_OPTIONS:
        kind, length = _HEADER.unpack_from(data, offset)
        if kind == rfc6450.VERSION:
            return RFC6450
        offset += _HEADER.size + length
        seen += 1
    return SSMPING


def answer(data: bytes, client: str, now_ns: int, responder: Responder) -> Answer:
    """The replies to *data*, received from *client* (its address, as text) at *now_ns*."""
    kind = ""
    try:
        data = bytes(data)
        kind = dialect(data)
        if kind == SSMPING:
            replies = ssmping.answer(data, client, responder)
        elif kind == RFC6450:
            replies = rfc6450.answer(data, client, now_ns, responder)
        else:
            return Answer("", ())
    except Malformed:
        return Answer(kind, (), malformed=True)
    except Exception:  # a bug must cost one datagram, never the listener
        return Answer(kind, (), malformed=True)
    bounded = tuple(reply for reply in replies[:MAX_REPLIES]
                    if len(reply.payload) <= len(data) + GROWTH[kind]
                    and fits(len(reply.payload)))
    return Answer(kind, bounded)
