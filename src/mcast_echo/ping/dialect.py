"""What one loop asks of each protocol of `mcast-echo ping` (--protocol).

pinger.py keeps the schedule, the send times, the responder table and the counts for
every protocol; a ``Dialect`` answers the rest: where requests go and what a failed
send means, the request for a sequence number and send time, whether a datagram is a
reply of ours (and its sequence number), how a reply is counted and shown, the banner,
notes and hints, and the session a protocol opens before its requests (session.py).
Two kinds answer: ``McastEchoDialect`` (dialect_mcast.py: mcast-echo probes to a group)
and ``HostDialect`` (dialect_host.py: ssmping or RFC 6450 to one HOST).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

from .responderstats import ResponderStats
from .settings import Settings
from .tally import ResponderTable, RunCounts


class Dialect(Protocol):
    """A protocol of `mcast-echo ping`, as pinger.py's loop and session.py drive it."""

    title: str  # the banner's first words; lowercased, the statistics' header
    session: int  # the run's random number, that tells our replies from others'
    opens_session: bool  # True: the four session_ members below open one before requests

    def settled(self, settings: Settings) -> Settings:
        """*settings* as the requests make them (their size, a session's group)."""
    def responder_table(self, settings: Settings, hears_group: bool) -> ResponderTable:
        """An empty table of the stats this dialect keeps per responder."""
    def destination(self, settings: Settings, index: int) -> tuple:
        """The sendto() address of every request."""
    def explain(self, err: OSError, settings: Settings) -> str:
        """One line for a failed send: what failed, and the fix."""

    session_tries: int  # session requests sent before giving up

    def session_wait(self, settings: Settings) -> float:
        """Seconds each session request waits for its answer."""
    def session_request(self) -> bytes:
        """The datagram that asks for a session."""
    def session_response(self, data: bytes, host: str) -> bool:
        """True when *data* opened the session."""

    def request(self, seq: int, sent_ns: int) -> bytes:
        """Request *seq*, sent at *sent_ns*: what goes out on the schedule."""
    def reply(self, data: bytes) -> Any:
        """The reply in *data* (with its .seq), or None when it is not one of ours."""
    def count(self, stats: ResponderStats, reply: Any, length: int, round_trip_ns: int,
              arrival_ttl: Optional[int], via: str, received_ns: Optional[int]) -> str:
        """Count *reply* in its responder's *stats*; the line that shows it."""
    def banner(self, settings: Settings, path_text: str) -> str:
        """The first line of a run (after the first send)."""
    def notes(self, settings: Settings, table: ResponderTable, counts: RunCounts) -> list[str]:
        """`note:` lines of the summary."""
    def hints(self, settings: Settings, path_text: str, table: ResponderTable,
              counts: RunCounts, no_group: str) -> list[str]:
        """`hint:` lines of the summary: what to check when too few responders counted."""
