"""What `mcast-echo ping` learns per responder, and how it is shown: lines, summary, JSON."""

from __future__ import annotations

import array
import enum
import ipaddress
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

from ..addresses import host_port
from ..wire.probe import Echo

MAX_RESPONDERS = 4096  # sources tracked per run: any group member can answer from many more
SEQ_WINDOW = 4096  # probes back that an echo is matched (send time) and told from a duplicate


def shown(text: str) -> str:
    """Text a peer sent, made safe for a terminal: printable characters only.

    Anything a terminal acts on (C0 and C1 controls, ESC, DEL, line breaks, NUL) and
    anything invisible (format characters such as U+202E, odd separators) becomes a
    visible escape like ``\\x1b`` or ``\\u202e``; a backslash is doubled, so a peer
    cannot pass its own text off as one of our escapes. JSON output keeps the raw text.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escaped(char) for char in text)


_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


class RttStats:
    """min/avg/max/mdev and the median (p50) of RTTs in ns.

    Welford's update: the textbook sum-of-squares formula cancels catastrophically
    when the spread is small next to the mean (mdev 0.000 or seconds off for real
    ~100 ms RTTs measured against a large value); this one does not. The median is
    exact over the first P50_SAMPLES RTTs, then that of a uniform sample of them all
    (reservoir sampling), so a long run's memory stays bounded.
    """

    __slots__ = ("count", "mean_ns", "_squares", "min_ns", "max_ns", "_sample", "_random")
    P50_SAMPLES = 1024

    def __init__(self) -> None:
        self.count = 0
        self.mean_ns = 0.0
        self._squares = 0.0  # sum of squared differences from the running mean
        self.min_ns = 0
        self.max_ns = 0
        self._sample: array.array = array.array("q")
        self._random: Optional[random.Random] = None

    def add(self, rtt_ns: int) -> None:
        if len(self._sample) < self.P50_SAMPLES:
            self._sample.append(rtt_ns)
        else:  # Algorithm R: every RTT so far stays in the sample with equal chance
            self._random = self._random or random.Random(self.P50_SAMPLES)
            slot = self._random.randrange(self.count + 1)
            if slot < self.P50_SAMPLES:
                self._sample[slot] = rtt_ns
        self.count += 1
        delta = rtt_ns - self.mean_ns
        self.mean_ns += delta / self.count
        self._squares += delta * (rtt_ns - self.mean_ns)
        if self.count == 1 or rtt_ns < self.min_ns:
            self.min_ns = rtt_ns
        self.max_ns = max(self.max_ns, rtt_ns)

    @property
    def p50_ns(self) -> float:
        """The median RTT (0 before any)."""
        return statistics.median(self._sample) if self._sample else 0.0

    @property
    def mdev_ns(self) -> float:
        """The population standard deviation, as ping's mdev."""
        return math.sqrt(max(0.0, self._squares) / self.count) if self.count else 0.0

    def as_ms(self) -> Optional[dict[str, float]]:
        """min/avg/max/mdev/p50 in ms, None before any sample."""
        if self.count == 0:
            return None
        return {"min": _ms(self.min_ns), "avg": _ms(self.mean_ns), "max": _ms(self.max_ns),
                "mdev": _ms(self.mdev_ns), "p50": _ms(self.p50_ns)}


class SeqWindow:
    """Which of the last SEQ_WINDOW sequence numbers were seen: a sliding bitmap.

    Its size is fixed however long the run: bit *n* of ``_bits`` stands for
    ``newest - n``.
    """

    __slots__ = ("newest", "_bits")
    _MASK = (1 << SEQ_WINDOW) - 1

    def __init__(self) -> None:
        self.newest = -1
        self._bits = 0

    def copy(self) -> SeqWindow:
        twin = SeqWindow()
        twin.newest, twin._bits = self.newest, self._bits
        return twin

    def mark(self, seq: int) -> Optional[bool]:
        """True the first time *seq* is marked, False after; None when it is older than
        the window (cannot tell, so never called a duplicate)."""
        if seq > self.newest:
            shift = seq - self.newest
            self._bits = ((self._bits << shift) | 1) & self._MASK if shift < SEQ_WINDOW else 1
            self.newest = seq
            return True
        age = self.newest - seq
        if age >= SEQ_WINDOW:
            return None
        if self._bits >> age & 1:
            return False
        self._bits |= 1 << age
        return True


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


def reply_line(stats: ResponderStats, echo: Echo, echo_len: int, rtt_ns: int,
               outcome: Outcome, via: str = UNICAST,
               received_ns: Optional[int] = None) -> str:
    """One ping-style line: `64 bytes from 10.0.0.2 (host-b, eth1) hops=1: seq=3 time=0.412 ms`.

    The byte count is the probe's part of the echo; a trailer is not counted. An echo
    that came to the group ends in `(group)`; with *received_ns* (-D) the line starts
    with the receive time, `[1700000000.123456]`, as ping -D does.
    """
    length = min(echo_len, echo.header.length)
    line = f"{length} bytes from {stats.identity()}: seq={echo.header.seq}"
    if received_ns is not None:
        line = f"[{received_ns // 1000 // 1_000_000}.{received_ns // 1000 % 1_000_000:06d}] " + line
    if echo.intact:
        line += f" time={rtt_ns / 1e6:.3f} ms"
    if echo.truncated:
        line += f" (TRUNCATED: {length} of {echo.header.length} bytes)"
    elif echo.corrupted:
        line += " (CORRUPTED)"
    elif outcome is Outcome.DUP:
        line += " (DUP!)"
    if via == GROUP:
        line += " (group)"
    if stats.wrong_port:
        line += " (wrong source port)"
    if stats.local:
        line += f" ({LOCAL_MARK})"
    return line


class ResponderTable:
    """The responders of one run, by source address and port, MAX_RESPONDERS at most.

    Any group member can answer from as many addresses and ports as it likes, so
    the table stops growing at its limit: echoes from further sources are counted,
    not kept, and the report says so.
    """

    def __init__(self, group_port: int, limit: int = MAX_RESPONDERS,
                 stats_type: type = ResponderStats,
                 is_local: Optional[Callable[[str], bool]] = None,
                 hears_group: bool = True) -> None:
        self.group_port = group_port
        self.limit = limit
        self.stats_type = stats_type
        self.is_local = is_local  # local.py's ThisHost; None: nothing is local
        self.hears_group = hears_group  # False: group echoes cannot be heard, nor judged
        self.untracked_echoes = 0
        self._by_source: dict[tuple[str, int], ResponderStats] = {}

    def lookup(self, address: str, port: int) -> Optional[ResponderStats]:
        """The stats of this source, new if there is room; None (and counted) if full."""
        stats = self._by_source.get((address, port))
        if stats is None:
            if len(self._by_source) >= self.limit:
                self.untracked_echoes += 1
                return None
            stats = self.stats_type(address, port, wrong_port=port != self.group_port,
                                    hears_group=self.hears_group)
            stats.local = self.is_local is not None and self.is_local(address)
            self._by_source[(address, port)] = stats
        return stats

    def in_order(self) -> list[ResponderStats]:
        return sorted(self._by_source.values(), key=_address_order)

    def __iter__(self):
        return iter(self._by_source.values())

    def answered(self) -> int:
        """Responders that count: what --expect, success, the textfile and /probe count.

        An intact echo from the group's port (docs/protocol.md; one host answering from
        N ports is not N responders), from another host than this one, and by the group
        when the responder echoes there.
        """
        return sum(1 for s in self._by_source.values() if s.counted)

    def local(self) -> list[ResponderStats]:
        """This host's own responders that answered: shown, never counted."""
        return [s for s in self._by_source.values() if s.local and s.received]

    def group_lost(self) -> list[ResponderStats]:
        """Responders that answered, but none of whose echoes to the group arrived."""
        return [s for s in self._by_source.values()
                if s.received and s.group_lost and not s.local and not s.wrong_port]

    def wrong_port(self) -> int:
        return sum(1 for s in self._by_source.values() if s.wrong_port)


@dataclass
class RunCounts:
    """What a run counts outside the per-responder stats."""

    transmitted: int = 0
    send_errors: int = 0
    stray: int = 0  # datagrams that are no echo of a probe this run sent
    late: int = 0  # echoes of probes older than SEQ_WINDOW: no send time left to match


def _address_order(stats: ResponderStats) -> tuple:
    address = ipaddress.ip_address(stats.address)
    return (address.version, address, stats.port)


def plural(count: int, noun: str, nouns: Optional[str] = None) -> str:
    """`1 probe`, `2 probes`: the summary's grammar, as ping's."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
