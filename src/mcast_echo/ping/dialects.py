"""The requests `mcast-echo ping --protocol ssmping|rfc6450` sends, and the replies it takes.

Pure functions over wire/ssmping.py and wire/rfc6450.py, no sockets: pinger.py sends
what ``request`` builds and hands every datagram it receives to ``reply``, through
dialect_host.py's ``HostDialect``. A reply is
ours when it carries our PID (ssmping) or Client ID (RFC 6450): that is the run's random
session number, so two pings on one host never count each other's replies.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple, Optional

from ..wire import rfc6450, ssmping
from ..wire.tlv import IPAddress
from .settings import PingError

# The TTL ssmpingd sends its replies with, and what ssmping's `dist=` is counted from;
# mcast-echo's listener and RFC 6450's TTL option say the same.
LEGACY_SERVER_TTL = 64


class Reply(NamedTuple):
    """A reply to one of our requests."""

    seq: int
    length: int  # bytes
    server_ttl: int  # the TTL the responder sent it with: hops = server_ttl - arrival TTL
    server: Optional[str]  # the responder's version or information, when the reply says


class SessionRefused(PingError):
    """The responder refused a session, or told us to stop (RFC 6450). Exit status 2."""


class Ssmping:
    """ssmping 0.9.1, as Debian's ssmping and asmping send it, asking for the version."""

    name = "ssmping"

    def __init__(self, session: int, group: IPAddress) -> None:
        self.session = session  # sent as the PID option
        self.group = group

    def request(self, seq: int, sent_ns: int) -> bytes:
        return ssmping.build_request(self.session, seq, sent_ns, self.group, want_version=True)

    def reply(self, data: bytes) -> Optional[Reply]:
        """Our reply in *data*, or None (another client's, a request, not ssmping at all)."""
        try:
            message = ssmping.parse(data)
        except ValueError:  # Malformed, or any odd field: not a reply of ours
            return None
        if message.type != ssmping.REPLY or message.pid != self.session or message.seq is None:
            return None
        return Reply(message.seq, len(data), LEGACY_SERVER_TTL, message.server_version)


class Rfc6450:
    """RFC 6450: an Init for a group and a Session ID, then Echo Requests with them."""

    name = "rfc6450"

    def __init__(self, session: int, wanted: Optional[IPAddress], ipv6: bool) -> None:
        self.client_id = session.to_bytes(4, "big")
        self.wanted = wanted  # the group asked for, None: any the responder offers
        self.family = rfc6450.FAMILY_IPV6 if ipv6 else rfc6450.FAMILY_IPV4
        self.group: Optional[IPAddress] = None  # from the Server Response
        self.session_id: Optional[bytes] = None
        self.server: Optional[str] = None

    def init(self) -> bytes:
        """Section 3.4, Init: the group we want as a full-length prefix, or any group of our
        family (a wildcard prefix), and a request for the Server Information."""
        prefix = (self.family if self.wanted is None
                  else ipaddress.ip_network(self.wanted))
        return rfc6450.build_init(self.client_id, (prefix,), want_info=True)

    def session_response(self, data: bytes, host: str) -> bool:
        """Take the Server Response to our Init in *data*: True when it gave a session
        (group, Session ID); SessionRefused when it names no group; False when *data*
        is something else."""
        message = self._ours(data, rfc6450.SERVER_RESPONSE)
        if message is None:
            return False
        if message.group is None:
            asked = f"{self.wanted}" if self.wanted is not None else "any group of the family"
            raise SessionRefused(f"{host} refused the session: its Server Response offers no "
                                 f"group (asked for {asked}); it serves none that fits, or "
                                 "not this dialect's version: ask its admin, or name a group "
                                 "it serves (mcast-echo ping --protocol rfc6450 HOST GROUP)")
        self.group, self.session_id = message.group, message.session_id
        self.server = message.server_info
        return True

    def request(self, seq: int, sent_ns: int) -> bytes:
        assert self.group is not None, "the Init comes first"
        return rfc6450.build_echo_request(self.client_id, seq, sent_ns, self.group,
                                          session=self.session_id)

    def reply(self, data: bytes) -> Optional[Reply]:
        """Our Echo Reply in *data*, or None; SessionRefused for a Server Response that
        tells us to stop (section 5: one without a group answers an Echo Request)."""
        if data[:1] == bytes([rfc6450.SERVER_RESPONSE]):
            message = self._ours(data, rfc6450.SERVER_RESPONSE)
            if message is not None and message.group is None:
                raise SessionRefused(
                    f"the responder told us to stop (RFC 6450 Server Response without a "
                    f"group, seq {message.seq}): the session for {self.group} ended (it "
                    "restarted, or no longer serves the group); run ping again")
            return None  # a late answer to a repeated Init: the session stands
        message = self._ours(data, rfc6450.ECHO_REPLY)
        if message is None or message.seq is None:
            return None
        ttl = message.ttl if message.ttl is not None else LEGACY_SERVER_TTL
        return Reply(message.seq, len(data), ttl, self.server)

    def _ours(self, data: bytes, kind: int) -> Optional[rfc6450.Message]:
        try:
            message = rfc6450.parse(data)
        except ValueError:  # Malformed, or any odd field: not a reply of ours
            return None
        if message.type != kind or message.client_id != self.client_id:
            return None
        return message
