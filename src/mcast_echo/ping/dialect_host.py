"""The ssmping and RFC 6450 dialects of `mcast-echo ping --protocol ssmping|rfc6450 HOST`.

``HostDialect`` is what pinger.py's loop asks of these: requests go by unicast to HOST
(hostping.py resolved it and opened the socket), replies come twice, by unicast and to
the group, and are counted per path (pathstats.py). The bytes are dialects.py's:
``Ssmping`` asks for the responder's version with every request; ``Rfc6450`` opens a
session first (an Init, answered by a Server Response that names the group and the
Session ID) and may be told to stop (``SessionRefused``: exit status 2). The banner
names the group and the responder's server string; the hints say what to check when
HOST stayed silent or only its unicast replies came.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from typing import Optional, Union

from ..addresses import is_ssm_group
from .dialects import Reply, Rfc6450, Ssmping
from .display import shown
from .hostping import destination, explain
from .pathstats import HostStats, as_echo
from .replyline import reply_line
from .responderstats import UNICAST, ResponderStats
from .settings import RFC6450, SSMPING, Settings
from .tally import ResponderTable, RunCounts

INIT_TRIES = 3  # RFC 6450 Inits sent before giving up on a responder
INIT_WAIT = 1.0  # seconds each Init waits for its Server Response (less under -i or -w)


class HostDialect:
    """ssmping or RFC 6450 (*settings*.protocol) to one HOST, for the run's *session*."""

    def __init__(self, settings: Settings, session: int) -> None:
        self.session = session
        self.wire: Union[Ssmping, Rfc6450]
        if settings.protocol == RFC6450:
            wanted = ipaddress.ip_address(settings.group) if settings.group else None
            self.wire = Rfc6450(session, wanted, settings.ipv6)
        else:
            self.wire = Ssmping(session, ipaddress.ip_address(settings.group))
        self.title = "SSMPING" if settings.protocol == SSMPING else "RFC6450 PING"
        self.daemon = "ssmpingd" if settings.protocol == SSMPING else "an RFC 6450 responder"
        self.opens_session = isinstance(self.wire, Rfc6450)
        self.session_tries = INIT_TRIES
        self.inits_sent = 0

    def settled(self, settings: Settings) -> Settings:
        """The settings as the requests make them: their size (for the banner and JSON),
        and RFC 6450's group once the session named it."""
        if self.wire.group is None:  # RFC 6450 before its session: nothing to send yet
            return settings
        return dataclasses.replace(settings, group=str(self.wire.group),
                                   size=len(self.wire.request(0, time.time_ns())))

    def responder_table(self, settings: Settings, hears_group: bool) -> ResponderTable:
        """Per responder stats with one path each for unicast and the group."""
        return ResponderTable(settings.port, stats_type=HostStats)

    def destination(self, settings: Settings, index: int) -> tuple:
        """Where requests go: HOST's port."""
        return destination(settings, index)

    def explain(self, err: OSError, settings: Settings) -> str:
        """One line for a failed send to HOST: what failed, and the fix."""
        return explain(err, settings)

    def session_wait(self, settings: Settings) -> float:
        """Seconds an Init waits for its Server Response: less when -i is shorter."""
        return min(INIT_WAIT, max(settings.interval, 0.2))

    def session_request(self) -> bytes:
        """RFC 6450's Init (section 4), counted for the hints."""
        assert isinstance(self.wire, Rfc6450)
        self.inits_sent += 1
        return self.wire.init()

    def session_response(self, data: bytes, host: str) -> bool:
        """True when *data* is the Server Response that opens our session;
        SessionRefused when it offers no group."""
        assert isinstance(self.wire, Rfc6450)
        return self.wire.session_response(data, host)

    def request(self, seq: int, sent_ns: int) -> bytes:
        """Request *seq*, sent at *sent_ns* (the realtime clock)."""
        return self.wire.request(seq, sent_ns)

    def reply(self, data: bytes) -> Optional[Reply]:
        """Our reply in *data*, or None; SessionRefused when RFC 6450 says stop."""
        return self.wire.reply(data)

    def count(self, stats: ResponderStats, reply: Reply, length: int, round_trip_ns: int,
              arrival_ttl: Optional[int], via: str, received_ns: Optional[int]) -> str:
        """Count *reply* (come *via* unicast or the group) on its path of the responder's
        *stats*; the line that shows it. The RTT is our own clock's, never the reply's."""
        assert isinstance(stats, HostStats)
        stats.group = stats.group or str(self.wire.group)
        outcome = stats.record_reply(reply, round_trip_ns, arrival_ttl, via)
        return reply_line(stats, as_echo(reply), length, round_trip_ns, outcome, via,
                          received_ns)

    def banner(self, settings: Settings, path_text: str) -> str:
        """The first line of a run: HOST, the group the replies come to, the requests."""
        s = settings
        host = s.host if s.host_name is None else f"{shown(s.host_name)} ({s.host})"
        kind = "source-specific, joined for" if s.ssm else "any-source"
        server = self.wire.server if isinstance(self.wire, Rfc6450) else None
        line = (f"{self.title} {host} port {s.port} via {path_text}: replies to "
                f"{s.group} ({kind}{' ' + s.host if s.ssm else ''}), {s.size}-byte requests, "
                f"{'hop limit' if s.ipv6 else 'ttl'} {s.ttl}")
        if server:
            line += f", server {shown(server)}"
        return line

    def notes(self, settings: Settings, table: ResponderTable, counts: RunCounts) -> list[str]:
        """None: a responder of these dialects states no rate limit to note."""
        return []

    def hints(self, settings: Settings, path_text: str, table: ResponderTable,
              counts: RunCounts, no_group: str) -> list[str]:
        """What to check when no multicast reply came: HOST silent, or only unicast."""
        if table.answered() > 0:
            return []
        s = settings
        if self.wire.group is None:
            return [f"responder: {s.host} did not answer {self.inits_sent} RFC 6450 Init(s) "
                    f"on port {s.port}: is a responder running there (mcast-echo serve with "
                    "`ssmping:` in its config; omping), on that port (the RFC's is 9903: "
                    "-p 9903)?",
                    f"firewall: UDP to {s.host} port {s.port} must reach it, and its "
                    "replies come back in"]
        if counts.transmitted == 0:
            return []
        if not any(stats.paths[UNICAST].received for stats in table
                   if isinstance(stats, HostStats)):
            return [f"responder: nothing came back from {s.host} port {s.port}: is "
                    f"{self.daemon} (or mcast-echo serve with `ssmping:`) running there, "
                    "on that port?",
                    f"firewall: UDP to {s.host} port {s.port} must reach it, and UDP from "
                    f"port {s.port} must come back in",
                    f"route: requests left from {path_text}: is that the way to "
                    f"{s.host}?"]
        found = [f"multicast: unicast replies came but none to {s.group}: the multicast "
                 f"path from {s.host} to here does not deliver (a router without PIM or "
                 "IGMP/MLD toward this link, IGMP snooping, a firewall on UDP to the group)"]
        if not is_ssm_group(s.group):
            found.append(f"group: {s.group} is any-source: the responder must agree to "
                         "answer to it (mcast-echo: its `ssmping: groups:`; ssmpingd: "
                         "groups ending in .234 or ::4321:1234)")
        if no_group:
            found.append(no_group)
        return found
