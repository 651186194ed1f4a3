"""What `mcast-echo ping --protocol ssmping|rfc6450` learns per responder and per path.

An ssmping or RFC 6450 responder answers each request twice: by unicast, and to the
group. The unicast reply says the host is up; the multicast one is what is being tested.
``HostStats`` is responderstats.py's ``ResponderStats`` (a sequence counts once, a repeat on
the same path is a duplicate) plus one ``PathStats`` per path, so the summary shows the
loss and RTT of each, as ssmping does. A responder counts for --expect when its
multicast replies arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..addresses import host_port
from ..wire import probe
from .dialects import Reply
from .display import shown
from .responderstats import GROUP, UNICAST, Outcome, ResponderStats, hop_count
from .rttstats import RttStats

PATHS = (UNICAST, GROUP)
PATH_NAMES = {UNICAST: "unicast", GROUP: "multicast"}  # ssmping's words


def as_echo(reply: Reply) -> probe.Echo:
    """A reply in the shape responderstats.py counts and replyline.py shows: intact, its
    seq and length."""
    return probe.Echo(probe.Header(0, 0, 0, reply.seq, 0, reply.length), None, False, False)


@dataclass
class PathStats:
    """One path of one responder: replies, duplicates, RTTs and hops."""

    received: int = 0
    duplicates: int = 0
    hops: Optional[int] = None  # the responder's TTL - the arrival TTL (ssmping's dist=)
    reply_ttl: Optional[int] = None
    rtt: RttStats = field(default_factory=RttStats)

    def loss_percent(self, transmitted: int) -> float:
        if transmitted == 0:
            return 0.0
        return round(100.0 * (transmitted - min(self.received, transmitted)) / transmitted, 1)

    def to_json(self, transmitted: int) -> dict[str, Any]:
        return {"received": self.received, "duplicates": self.duplicates, "hops": self.hops,
                "reply_ttl": self.reply_ttl, "loss_percent": self.loss_percent(transmitted),
                "rtt_ms": self.rtt.as_ms()}


@dataclass
class HostStats(ResponderStats):
    """A responder of the multicast ping dialects: its server string and its two paths."""

    server: Optional[str] = None  # ssmping's server version, RFC 6450's Server Information
    paths: dict[str, PathStats] = field(default_factory=lambda: {p: PathStats() for p in PATHS})
    TRAILERS = False

    def record_reply(self, reply: Reply, rtt_ns: int, reply_ttl: Optional[int],
                     via: str) -> Outcome:
        """Count one reply; *rtt_ns* is from our own clock, never the reply's timestamps."""
        outcome = self.record(as_echo(reply), rtt_ns, reply_ttl, 0, via)
        path = self.paths[via]
        self.hops = path.hops = hop_count(reply.server_ttl, reply_ttl)
        path.reply_ttl = reply_ttl
        if reply.server:
            self.server = reply.server
        if outcome is Outcome.DUP:
            path.duplicates += 1
        elif outcome in (Outcome.NEW, Outcome.COPY):  # the first on this path
            path.received += 1
            path.rtt.add(rtt_ns)
        return outcome

    @property
    def counted(self) -> bool:
        return bool(self.paths[GROUP].received) and not self.wrong_port and not self.local

    def measured(self) -> PathStats:  # type: ignore[override]
        """The multicast path: what is being tested, and what the textfile reports."""
        return self.paths[GROUP]

    def _label(self, hops: Optional[int], path: str = "", server: bool = True) -> str:
        text = host_port(self.address, self.port) if self.wrong_port else self.address
        if self.dns_name is not None:
            text = f"{shown(self.dns_name)} ({text})"
        if server and self.server:
            text += f" ({shown(self.server)})"
        if path:
            text += f" {path}"
        return text + f" hops={hops if hops is not None else '?'}"

    def identity(self) -> str:
        """`10.0.0.2 hops=0`, the hops of the reply recorded last: a reply's line (the
        server string is the summary's, once per path)."""
        return self._label(self.hops, server=False)

    def summary_lines(self, transmitted: int) -> list[str]:
        """One line per path: `10.0.0.2 (0.9.1 (20080418)) multicast 232.43.211.234 hops=0:
        3 transmitted, 3 received, 0% loss, rtt min/avg/max/mdev = ...`."""
        lines = []
        for via in PATHS:
            path = self.paths[via]
            name = PATH_NAMES[via] + (f" {self.group}" if via == GROUP and self.group else "")
            parts = [f"{transmitted} transmitted", f"{path.received} received"]
            if path.duplicates:
                parts.append(f"+{path.duplicates} duplicates")
            parts.append(f"{path.loss_percent(transmitted):g}% loss")
            rtt = path.rtt.as_ms()
            if rtt is not None:
                parts.append("rtt min/avg/max/mdev = "
                             f"{rtt['min']:.3f}/{rtt['avg']:.3f}/{rtt['max']:.3f}/"
                             f"{rtt['mdev']:.3f} ms")
            lines.append(f"{self._label(path.hops, name)}: " + ", ".join(parts))
        return lines

    def to_json(self, transmitted: int) -> dict[str, Any]:
        document = super().to_json(transmitted)
        document["without_trailer"] = None  # these dialects have no trailer
        document["server"] = self.server
        document["paths"] = {PATH_NAMES[via]: self.paths[via].to_json(transmitted)
                             for via in PATHS}
        return document
