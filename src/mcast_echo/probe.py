"""The ping probe format and the responder's identity trailer (see docs/protocol.md).

Placeholder until the ping client lands: the responder calls these two
functions on every datagram, so their signatures are fixed.
"""

from __future__ import annotations

from typing import NamedTuple, Optional


class Arrival(NamedTuple):
    """What the responder knows about how a datagram reached it."""

    hostname: str
    ifname: str  # interface the datagram arrived on ("" if unknown)
    group: str  # the group address it was sent to
    ttl: Optional[int]  # IP TTL it arrived with (IP_RECVTTL), None if unknown
    recv_time_ns: int  # time.time_ns() at receipt


def wants_trailer(data: bytes) -> bool:
    """Cheap test, run on every datagram: does this probe ask for the identity trailer?"""
    return False


def with_trailer(data: bytes, arrival: Arrival) -> bytes:
    """The echo of a probe that asked for a trailer: the datagram, then the trailer."""
    return data
