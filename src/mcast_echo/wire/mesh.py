"""The mesh's datagrams (#23): a probe, sent to the mesh group, and a reply, sent by
unicast to the prober's source address and port.

Both are one fixed header of HEADER.size (28) bytes, network byte order::

    magic    4  b"MCMS"
    version  1  VERSION (1); another version is not ours to read: ignored
    kind     1  PROBE (b"P") or REPLY (b"R")
    flags    2  0 (sent as 0, ignored on receipt)
    run      8  the prober's run: a random number drawn when its mesh starts, so that a
                restarted prober's sequence numbers are not taken for old ones
    sequence 8  the prober's probe number, from 0
    sender   4  the IPv4 address the datagram leaves from: the prober's (a probe) or the
                responder's (a reply) address on its mesh interface

A reply copies the run and sequence of the probe it answers. A probe may be longer than
the header (padding, to test a path's MTU): the rest is ignored, and the reply is the
header alone, so a reply is never larger than the probe it answers. parse() never raises:
what is not a mesh datagram of this version comes back as None.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple, Optional

MAGIC = b"MCMS"
VERSION = 1
PROBE = ord("P")
REPLY = ord("R")
HEADER = struct.Struct("!4sBBHQQ4s")
SIZE = HEADER.size  # 28: every reply, and the smallest probe


class Datagram(NamedTuple):
    kind: int  # PROBE or REPLY
    run: int
    sequence: int
    sender: str  # dotted IPv4 text


def probe(run: int, sequence: int, sender: str) -> bytes:
    """A probe of *run* number *sequence*, sent from *sender* (dotted IPv4)."""
    return HEADER.pack(MAGIC, VERSION, PROBE, 0, run, sequence, socket.inet_aton(sender))


def reply(to: Datagram, responder: str) -> bytes:
    """The reply to probe *to*, from *responder* (dotted IPv4): SIZE bytes, no more than
    any probe."""
    return HEADER.pack(MAGIC, VERSION, REPLY, 0, to.run, to.sequence,
                       socket.inet_aton(responder))


def parse(data: bytes) -> Optional[Datagram]:
    """The probe or reply *data* holds; None if it is none of this version."""
    if len(data) < SIZE or data[:4] != MAGIC:
        return None
    _magic, version, kind, _flags, run, sequence, sender = HEADER.unpack_from(data)
    if version != VERSION or kind not in (PROBE, REPLY) or (kind == REPLY and len(data) != SIZE):
        return None
    return Datagram(kind, run, sequence, socket.inet_ntoa(sender))
