"""mcast-echo's own dialect of `mcast-echo ping`: probes to a group, echoes from its members.

``McastEchoDialect`` is what pinger.py's loop asks of the default `--protocol mcast-echo`:
the probe to send (wire/probe.py, docs/protocol.md), whether a datagram is an echo of
ours, how to count one (its RTT less the responder's residence time, from the trailer),
the banner, and the notes and hints of the summary (summary.py). Probes go to the group
(sockets.py opened the socket and joined it); there is no session to open.
"""

from __future__ import annotations

from typing import Optional

from ..wire import probe
from . import summary
from .local import ThisHost
from .replyline import reply_line
from .responderstats import ResponderStats
from .settings import Settings
from .sockets import destination, explain
from .tally import ResponderTable, RunCounts


def network_rtt(round_trip_ns: int, echo: probe.Echo) -> tuple[int, Optional[int]]:
    """The RTT to show: (T4 - T1) - (T3 - T2), the round trip less the time the responder
    held the probe (its residence time, from the echo's trailer), and the residence time
    when it cannot be true (longer than the round trip: forged, or a broken clock), else
    None. Such an echo, and one without a residence time (a plain echo server), keeps the
    raw round trip: an RTT is never negative."""
    trailer = echo.trailer
    if trailer is None or trailer.residence_ns is None:
        return round_trip_ns, None
    if trailer.residence_ns > round_trip_ns:
        return round_trip_ns, trailer.residence_ns
    return round_trip_ns - trailer.residence_ns, None


class McastEchoDialect:
    """mcast-echo probes of *settings* (size, TTL, --spread) for the run's *session*."""

    title = "MCAST-ECHO PING"  # the banner's first words; the summary's are "mcast-echo ping"
    opens_session = False  # probes go from the start

    def __init__(self, settings: Settings, session: int) -> None:
        self.session = session
        self.size = settings.size
        self.sent_ttl = settings.ttl
        self.spread_ms = settings.spread

    def settled(self, settings: Settings) -> Settings:
        """The settings as the probes show them: as given."""
        return settings

    def responder_table(self, settings: Settings, hears_group: bool) -> ResponderTable:
        """Per responder stats (responderstats.py's), this host's own responders marked."""
        return ResponderTable(settings.port, is_local=ThisHost(), hears_group=hears_group)

    def destination(self, settings: Settings, index: int) -> tuple:
        """Where probes go: the group."""
        return destination(settings, index)

    def explain(self, err: OSError, settings: Settings) -> str:
        """One line for a failed send to the group: what failed, and the fix."""
        return explain(err, settings)

    def request(self, seq: int, sent_ns: int) -> bytes:
        """Probe *seq*, sent at *sent_ns* (the realtime clock)."""
        return probe.build_probe(self.session, seq, sent_ns, self.size,
                                 sent_ttl=self.sent_ttl, spread_ms=self.spread_ms)

    def reply(self, data: bytes) -> Optional[probe.Echo]:
        """The echo of one of our probes in *data*; None when it is not (another run's, a
        damaged header, not a probe at all)."""
        return probe.check_echo(data, self.session)

    def count(self, stats: ResponderStats, echo: probe.Echo, length: int, round_trip_ns: int,
              arrival_ttl: Optional[int], via: str, received_ns: Optional[int]) -> str:
        """Count *echo* (*length* bytes, come *via* unicast or the group) in its responder's
        *stats*; the line that shows it."""
        rtt_ns, impossible = network_rtt(round_trip_ns, echo)
        if impossible is not None and echo.intact:
            stats.impossible_residence += 1
        outcome = stats.record(echo, rtt_ns, arrival_ttl, self.sent_ttl, via)
        line = reply_line(stats, echo, length, rtt_ns, outcome, via, received_ns)
        if impossible is not None:
            line += f" (IMPOSSIBLE residence time {impossible / 1e6:.3f} ms: RTT not corrected)"
        return line

    def banner(self, settings: Settings, path_text: str) -> str:
        """The first line of a run, and what the probe size or a missing -S costs."""
        s = settings
        line = (f"{self.title} {s.target} via {path_text}: {s.size}-byte probes, "
                f"{'hop limit' if s.ipv6 else 'ttl'} {s.ttl}, "
                f"loopback {'on' if s.loopback else 'off'}")
        if s.ssm and not s.source:
            line += (f"\n({s.group} is a source-specific group and no -S was given: responders "
                     "answer only the sources in their `sources:`; pass -S with the address "
                     "of this host they list)")
        if s.size < probe.MIN_TRAILER_PROBE:
            line += (f"\n(at {s.size} bytes a probe has no room for the responder's identity, "
                     f"which it writes into the probe: responders show as addresses only; "
                     f"-s {probe.MIN_TRAILER_PROBE} or more gives names)")
        elif s.size < probe.WHOLE_NAMES_PROBE:
            line += (f"\n(at {s.size} bytes a responder's names may be cut to fit: an echo is "
                     f"never larger than its probe; -s {probe.WHOLE_NAMES_PROBE} or more "
                     f"fits any)")
        if s.size < probe.RESIDENCE_PROBE:
            line += (f"\n(at {s.size} bytes a probe has no room for the responder's residence "
                     f"time: RTTs include the responder's own time; -s {probe.RESIDENCE_PROBE} "
                     "or more takes it off)")
        return line

    def notes(self, settings: Settings, table: ResponderTable, counts: RunCounts) -> list[str]:
        """A note when the probes outran the responders' default rate limit."""
        return summary.rate_note(settings, table, counts.transmitted)

    def hints(self, settings: Settings, path_text: str, table: ResponderTable,
              counts: RunCounts, no_group: str) -> list[str]:
        """What to check when no responder counted (summary.py's hints)."""
        return summary.hints(settings, path_text, table, counts)

