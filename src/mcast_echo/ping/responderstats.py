"""What one responder (one source address and port) told `mcast-echo ping`, and whether
it counts.

``ResponderStats.record`` counts each echo (once per sequence, a repeat on the same
path a duplicate, the other path's a copy) into its RTT statistics (rttstats.py) and
sequence windows (seqwindow.py); the same object says who the responder is, whether it
counts for --expect, and its summary line and JSON. pathstats.py's ``HostStats`` adds
the two paths of ssmping and RFC 6450.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from ..addresses import host_port
from ..wire.probe import Echo
from ..wire.seqwindow import SeqWindow
from .display import plural, shown
from .rttstats import RttStats


def hop_count(sent_ttl: int, arrival_ttl: Optional[int]) -> Optional[int]:
    """Routers between us and a responder; None when the trailer's TTL is unknown or
    impossible (no router raises a TTL, so more than we sent is a forgery)."""
    if arrival_ttl is None or not 0 <= arrival_ttl <= sent_ttl:
        return None
    return sent_ttl - arrival_ttl


UNICAST, GROUP = "unicast", "group"  # how an echo reached us: to our socket, or to the group
LOCAL_MARK = "local"  # this host's own responder: shown, never counted (local.py)


class Measured(NamedTuple):
    """What the textfile reports of a responder: the path being tested."""

    received: int
    hops: Optional[int]
    rtt: RttStats


class Outcome(enum.Enum):
    """What one echo was to its responder's stats (reply_line marks a DUP)."""

    NEW = "new"  # the first intact echo of this sequence: received, RTT counted
    DAMAGED = "damaged"  # truncated or corrupted
    DUP = "dup"  # again on the same path: (DUP!)
    COPY = "copy"  # already received the other way (unicast and group): not a duplicate
    OLD = "old"  # older than the sequence window: cannot tell


@dataclass
class ResponderStats:
    """Everything one responder (one source address and port) told us during a run.

    Names are kept as the peer sent them (JSON shows them so); text output passes
    them through ``shown``. A responder may answer by unicast, to the group, or both
    (``reply: both``): a sequence counts once, its second copy is a ``copy``, and only
    a repeat on the same path is a duplicate.

    A responder that echoes to the group (its trailer says so, or a group echo came) has
    a group path, which is what a multicast check tests: its loss is shown, and when none
    of its group echoes arrive it does not count, whatever came by unicast. One of this
    host's own addresses (``local``) is shown and never counts: its echoes never crossed
    the network.
    """

    address: str  # IPv6 with its zone when it has one: fe80::2%eth0
    port: int
    wrong_port: bool = False  # echoes should come from the group's port (docs/protocol.md)
    name: Optional[str] = None  # from the identity trailer; None for a plain echo server
    ifname: Optional[str] = None  # the responder's interface the probe arrived on
    group: Optional[str] = None
    dns_name: Optional[str] = None  # the reverse lookup of address; None with -n or none
    hops: Optional[int] = None  # our TTL - arrival TTL, from the latest trailer; None: unknown
    arrival_ttl: Optional[int] = None  # as the trailer states it
    reply_ttl: Optional[int] = None  # IP TTL of the latest echo as it reached us
    received: int = 0  # distinct probes echoed intact
    duplicates: int = 0
    truncated: int = 0
    corrupted: int = 0
    no_trailer: int = 0  # intact echoes of probes that asked for a trailer but got none
    group_echoes: int = 0  # intact echoes that came to the group (first per sequence)
    copies: int = 0  # intact echoes of a sequence already received the other way
    local: bool = False  # one of this host's addresses (local.py): never counted
    group_path: bool = False  # it echoes to the group (its trailer says so, or one came)
    hears_group: bool = True  # False: ping cannot hear group echoes, so cannot judge them
    impossible_residence: int = 0  # echoes whose residence time exceeds the round trip
    rtt: RttStats = field(default_factory=RttStats, repr=False)
    seen: SeqWindow = field(default_factory=SeqWindow, repr=False)  # either path
    first_path: Optional[str] = field(default=None, repr=False)
    # One window per path, made only once a responder answers both ways: until then
    # its one path's window is ``seen`` itself (4,096 responders cost no more).
    _path_seen: dict[str, SeqWindow] = field(default_factory=dict, repr=False)
    TRAILERS = True  # echoes of probes carry an identity trailer (not so ssmping's replies)

    def _window(self, via: str) -> SeqWindow:
        if self.first_path is None:
            self.first_path = via
        if not self._path_seen:
            if via == self.first_path:
                return self.seen
            self._path_seen = {self.first_path: self.seen.copy(), via: SeqWindow()}
        return self._path_seen[via]

    @property
    def via(self) -> str:
        """unicast, group or both: how this responder's echoes reached us."""
        return "both" if self._path_seen else (self.first_path or UNICAST)

    def record(self, echo: Echo, rtt_ns: int, reply_ttl: Optional[int], sent_ttl: int,
               via: str = UNICAST) -> Outcome:
        """Count one echo of a probe we sent with TTL *sent_ttl*.

        *rtt_ns* comes from our own clock; the echo's header is never trusted for it.
        """
        self.reply_ttl = reply_ttl
        if echo.trailer is not None:
            trailer = echo.trailer
            self.name, self.ifname, self.group = trailer.hostname, trailer.ifname, trailer.group
            self.arrival_ttl = trailer.arrival_ttl
            self.hops = hop_count(sent_ttl, trailer.arrival_ttl)
            self.group_path = self.group_path or trailer.group_echoes
        if via == GROUP:
            self.group_path = True
        if echo.truncated:
            self.truncated += 1
            return Outcome.DAMAGED
        if echo.corrupted:
            self.corrupted += 1
            return Outcome.DAMAGED
        window = self._window(via)
        first_on_path = window.mark(echo.header.seq)
        if first_on_path is None:  # older than the window (the pinger counts such echoes late)
            return Outcome.OLD
        if not first_on_path:
            self.duplicates += 1
            return Outcome.DUP
        if via == GROUP:
            self.group_echoes += 1
        if window is not self.seen:
            first = self.seen.mark(echo.header.seq)
            if first is None:
                return Outcome.OLD
            if not first:
                self.copies += 1
                return Outcome.COPY
        if echo.trailer is None and self.TRAILERS:
            self.no_trailer += 1
        self.rtt.add(rtt_ns)
        self.received += 1
        return Outcome.NEW

    def identity(self) -> str:
        """`10.0.0.2 (host-b, eth1) hops=1`, the address alone for a plain echo server,
        `address:port` (`[address]:port` for IPv6) when the echo came from another port
        than the group's, and `name (address)` first when a reverse lookup found a name."""
        text = host_port(self.address, self.port) if self.wrong_port else self.address
        if self.dns_name is not None:
            text = f"{shown(self.dns_name)} ({text})"
        if self.name is not None:
            name = shown(self.name)
            text += f" ({name}, {shown(self.ifname)})" if self.ifname else f" ({name})"
            text += f" hops={self.hops if self.hops is not None else '?'}"
        return text

    @property
    def counted(self) -> bool:
        """Does this responder count for --expect: an intact echo, from the group's port,
        from another host, and, if it echoes to the group, at least one by the group."""
        return (bool(self.received) and not self.wrong_port and not self.local
                and not self.group_lost)

    @property
    def judges_group(self) -> bool:
        """Is the group path this responder's to be judged: it echoes to the group, and
        ping can hear echoes there."""
        return self.group_path and self.hears_group

    @property
    def group_lost(self) -> bool:
        """It echoes to the group, ping can hear there, and none of those echoes came."""
        return self.judges_group and not self.group_echoes

    def group_loss_percent(self, transmitted: int) -> Optional[float]:
        """Loss of the echoes to the group; None when the responder sends none (or ping
        cannot hear them)."""
        if not self.judges_group:
            return None
        if transmitted == 0:
            return 0.0
        received = min(self.group_echoes, transmitted)
        return round(100.0 * (transmitted - received) / transmitted, 1)

    def measured(self) -> Measured:
        """What the textfile reports: received, rtt, hops -- of the group path when the
        responder echoes to the group (HostStats: its multicast path)."""
        received = self.group_echoes if self.judges_group else self.received
        return Measured(received, self.hops, self.rtt)

    def marks(self) -> list[str]:
        """Why a responder that answered is not counted, for the summary."""
        found = []
        if self.local:
            found.append(f"{LOCAL_MARK}: this host's own responder, not counted")
        if self.received and self.group_lost:
            found.append("not counted: none of its echoes to the group arrived")
        return found

    def loss_percent(self, transmitted: int) -> float:
        if transmitted == 0:
            return 0.0
        return round(100.0 * (transmitted - min(self.received, transmitted)) / transmitted, 1)

    def rtt_ms(self) -> Optional[dict[str, float]]:
        """min/avg/max/mdev/p50 in ms (mdev as ping computes it), None before any intact echo."""
        return self.rtt.as_ms()

    def summary_line(self, transmitted: int) -> str:
        received = f"{self.received} received"
        if self.via == GROUP:
            received += " (group)"
        elif self.via == "both":
            received += f" (unicast and group, +{plural(self.copies, 'copy', 'copies')})"
        parts = [f"{transmitted} transmitted", received]
        group_loss = self.group_loss_percent(transmitted)
        if group_loss is not None and self.via != GROUP:
            parts.append(f"{self.group_echoes} by the group ({group_loss:g}% group loss)")
        for count, label in ((self.duplicates, "duplicates"), (self.truncated, "truncated"),
                             (self.corrupted, "corrupted")):
            if count:
                parts.append(f"+{count} {label}" if label == "duplicates" else f"{count} {label}")
        parts.append(f"{self.loss_percent(transmitted):g}% loss")
        rtt = self.rtt_ms()
        if rtt is not None:
            parts.append("rtt min/avg/max/mdev = "
                         f"{rtt['min']:.3f}/{rtt['avg']:.3f}/{rtt['max']:.3f}/{rtt['mdev']:.3f} ms")
        line = f"{self.identity()}: " + ", ".join(parts)
        marks = self.marks()
        return line + f" ({'; '.join(marks)})" if marks else line

    def summary_lines(self, transmitted: int) -> list[str]:
        """The summary's lines for this responder (subclasses show one per path)."""
        return [self.summary_line(transmitted)]

    def to_json(self, transmitted: int) -> dict[str, Any]:
        return {
            "address": self.address, "port": self.port, "dns_name": self.dns_name,
            "wrong_source_port": self.wrong_port, "name": self.name,
            "interface": self.ifname, "group": self.group, "hops": self.hops,
            "arrival_ttl": self.arrival_ttl, "reply_ttl": self.reply_ttl, "via": self.via,
            "transmitted": transmitted, "received": self.received,
            "duplicates": self.duplicates, "truncated": self.truncated,
            "corrupted": self.corrupted, "without_trailer": self.no_trailer,
            "group_echoes": self.group_echoes, "copies": self.copies,
            "impossible_residence": self.impossible_residence,
            "loss_percent": self.loss_percent(transmitted), "rtt_ms": self.rtt_ms(),
            "local": self.local, "group_path": self.group_path,
            "group_loss_percent": self.group_loss_percent(transmitted),
            "counted": self.counted,
        }

