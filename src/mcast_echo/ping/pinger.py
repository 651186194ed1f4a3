"""The probe loop of `mcast-echo ping`: send on a schedule, match every echo, report.

``Pinger`` sends a probe every interval and reads the echoes, unicast and sent to
the group, from the one socket sockets.py or hostping.py opens, until the count and
the wait, the -w deadline, or Ctrl-C. Ctrl-\\ (SIGQUIT) prints the
statistics so far, as ping does. Signal handlers only record; the loop acts.

What differs between the protocols is a ``Dialect`` object the loop asks: mcast-echo's
own (dialect_mcast.py), or ssmping's or RFC 6450's (dialect_host.py). The loop keeps
the schedule, the send times, the responder table and the counts; the dialect builds
each request, reads each datagram, counts a reply, and words the banner, notes and hints.
"""

from __future__ import annotations

import array
import errno
import json
import selectors
import socket
import sys
import time
from typing import Optional, TextIO

from ..net.ancillary import STAMPED_ARRIVAL_SPACE, Received
from ..wire import probe
from ..wire.seqwindow import SEQ_WINDOW
from . import summary
from .dialect import Dialect
from .interrupts import Interrupts
from .names import FIRST_WAIT, Names
from .responderstats import GROUP, UNICAST, ResponderStats
from .session import open_session
from .settings import PingError, Settings
from .sockets import Path, join_for_replies, shown_address, source_pktinfo
from .tally import RunCounts

MAX_CATCH_UP = 0.05  # seconds of missed sends made up at once; longer stalls are not
SCHEDULE_SLACK = 1e-6  # seconds: a probe due exactly at its last chance is still sent
RECEIVE_BATCH = 256  # echoes read per wakeup before the loop looks at the clock again

# Send errors worth counting and carrying on after (a full queue, a stray ICMP error).
_TRANSIENT_SEND = {errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED, errno.EINTR}


def _timeout(seconds: float) -> float:
    """A select() timeout that wakes *by* the end of the run: epoll rounds up to whole
    milliseconds, so round down (the end's last part of a millisecond polls)."""
    return max(0.0, int(seconds * 1000) / 1000)


class OutputError(PingError):
    """Standard output cannot be written (a full disk, /dev/full). Exit status 2."""


class SendTimes:
    """When we sent each of the last SEQ_WINDOW probes, by our own clock.

    RTTs are the kernel's receive time minus this: the send time in an echo's header
    is whatever the peer wrote there. A fixed ring, so a long run costs nothing more.
    """

    def __init__(self, window: int = SEQ_WINDOW) -> None:
        self._sent_ns = array.array("q", bytes(8 * window))  # 0: the send failed
        self.next_seq = 0

    def record(self, sent_ns: int) -> int:
        """Store the send time of the next probe (0 if it was not sent); returns its seq."""
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        self._sent_ns[seq % len(self._sent_ns)] = sent_ns
        return seq

    def lookup(self, seq: int) -> Optional[int]:
        """The send time of *seq*, None if we did not send it or it left the window."""
        if not self.next_seq - len(self._sent_ns) <= seq < self.next_seq:
            return None
        return self._sent_ns[seq % len(self._sent_ns)] or None

    def too_old(self, seq: int) -> bool:
        return seq < self.next_seq - len(self._sent_ns)


class Pinger:
    """One run of *dialect*: sends the probes, matches the echoes, keeps the per-responder
    stats."""

    def __init__(self, settings: Settings, dialect: Dialect, sock: socket.socket, path: Path,
                 out: TextIO, no_group: str = "") -> None:
        self.dialect = dialect
        self.settings = dialect.settled(settings)
        self.sock = sock
        self.path = path
        self.out = out
        self.no_group = no_group  # why echoes to the group are not heard, if they are not
        self.destination = dialect.destination(settings, path.index)
        self.source_pktinfo = source_pktinfo(settings, path.index)  # -S
        self.session = dialect.session
        self.responders = dialect.responder_table(settings, hears_group=not no_group)
        self.counts = RunCounts()
        self.send_times = SendTimes()
        self.names = Names(settings.numeric or settings.json)
        self._reported_errnos: set[int] = set()
        self.slowest_ns = 0  # the longest a probe's answer took this run (T4 - T1, raw)
        self.duration_s: Optional[float] = None  # the run's, once it has reported

    def _print(self, text: str, to: Optional[TextIO] = None) -> None:
        """Write a line; a failing standard output ends the run (exit 2), once, no traceback."""
        try:
            print(text, file=to or self.out, flush=True)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputError(f"cannot write the output: {err.strerror or err}") from None

    def _say(self, line: str) -> None:
        if not (self.settings.quiet or self.settings.json):
            self._print(line)

    @property
    def next_seq(self) -> int:
        return self.send_times.next_seq

    def send(self) -> None:
        seq = self.next_seq
        sent_ns = time.time_ns()  # the realtime clock, as the kernel's receive timestamps
        datagram = self.dialect.request(seq, sent_ns)
        try:
            if self.source_pktinfo:
                self.sock.sendmsg([datagram], self.source_pktinfo, 0, self.destination)
            else:
                self.sock.sendto(datagram, self.destination)
        except OSError as err:
            self.send_times.record(0)
            if self.counts.transmitted == 0 and err.errno not in _TRANSIENT_SEND:
                raise PingError(self.dialect.explain(err, self.settings)) from None
            self.counts.send_errors += 1
            if err.errno not in self._reported_errnos:  # once per errno, not per probe
                self._reported_errnos.add(err.errno or 0)
                print(f"mcast-echo ping: seq={seq}: {self.dialect.explain(err, self.settings)}",
                      file=sys.stderr, flush=True)
            return
        self.send_times.record(sent_ns)
        self.counts.transmitted += 1

    def receive(self) -> None:
        """Read the echoes that are waiting (a batch at most, so sending keeps its pace)."""
        for _ in range(RECEIVE_BATCH):
            try:
                data, ancdata, _flags, source = self.sock.recvmsg(
                    probe.MAX_UDP_PAYLOAD + 1, STAMPED_ARRIVAL_SPACE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued on the socket; the probe counts as lost
                return
            self.handle(data, Received(ancdata), source)

    def handle(self, data: bytes, arrival: Received, source: tuple) -> None:
        """Match one datagram to the probe it answers, count it and show it."""
        via = GROUP if arrival.to_group else UNICAST
        reply = self.dialect.reply(data)
        if reply is None:
            if via == UNICAST:
                self.counts.stray += 1  # no answer to a probe of this run
            return  # others' datagrams to the group on our port are not ours to count
        found = self.responder(reply.seq, arrival, source)
        if found is None:
            return
        stats, round_trip_ns, rx_ns = found
        self._say(self.dialect.count(stats, reply, len(data), round_trip_ns, arrival.ttl, via,
                                     rx_ns if self.settings.timestamps else None))

    def responder(self, seq: int, arrival: Received,
                  source: tuple) -> Optional[tuple[ResponderStats, int, int]]:
        """The stats of the source of an answer to probe *seq*, its RTT and receive time;
        None (and counted) when it answers no probe of this run or the table is full."""
        sent_ns = self._send_time(seq)
        if sent_ns is None:
            return None
        address = shown_address(source[0], source[3] if len(source) > 3 else 0)
        stats = self.responders.lookup(address, source[1])
        if stats is None:
            self._table_full_notice()
            return None
        if stats.dns_name is None:
            stats.dns_name = self.names.name(source[0], FIRST_WAIT)
        rx_ns = arrival.received_ns or time.time_ns()
        round_trip_ns = max(0, rx_ns - sent_ns)  # a clock step back: never negative
        self.slowest_ns = max(self.slowest_ns, round_trip_ns)
        return stats, round_trip_ns, rx_ns

    def _send_time(self, seq: int) -> Optional[int]:
        """Our send time of probe *seq*; None (and counted) when there is none."""
        sent_ns = self.send_times.lookup(seq)
        if sent_ns is None:
            if self.send_times.too_old(seq):
                self.counts.late += 1
            else:
                self.counts.stray += 1  # no echo of a probe this run sent
        return sent_ns

    def _table_full_notice(self) -> None:
        if self.responders.untracked_echoes == 1:  # once per run: a peer can trigger it
            print(f"mcast-echo ping: more than {self.responders.limit} responders: echoes "
                  "from further sources are counted, not shown", file=sys.stderr, flush=True)

    def run(self, interrupts: Interrupts) -> None:
        """The whole run: the dialect's session, the probes and echoes, then the report.
        -w counts from the start, the session's requests included."""
        started = time.monotonic()
        if self.dialect.opens_session:
            if not open_session(self.sock, self.dialect, self.settings, self.source_pktinfo,
                                self.destination, interrupts, started):
                self.report(self.elapsed(started), started)
                return  # the responder never answered: the report's hints say so
            self.settings = self.dialect.settled(self.settings)  # the group it named
            self.no_group = join_for_replies(self.sock, self.settings, self.path.index)
        if self.no_group:
            print(f"mcast-echo ping: {self.no_group}", file=sys.stderr, flush=True)
        self.loop(interrupts, started)
        self.report(self.elapsed(started), started)

    def elapsed(self, started: float) -> float:
        """The run's duration: the loop stops at -w, so a deadline run lasts -w at most
        (the few microseconds of the last wakeup past it are not probing time)."""
        duration = time.monotonic() - started
        deadline = self.settings.deadline
        return min(duration, deadline) if deadline is not None else duration

    def answer_reserve(self) -> float:
        """Seconds a probe needs for its answer, which -w keeps free before the deadline:
        an interval (the wait a probe gets within the run), or twice the slowest answer
        so far when that is longer (as ping(8) waits two RTTs), plus the --spread delay."""
        return max(self.settings.interval, 2 * self.slowest_ns / 1e9) + self.settings.spread_s

    def last_chance(self, due: float, now: float, hard_end: float) -> bool:
        """May a probe due at *due* (sent *now*) go out before -w? Only when its answer can
        come back by then: the final probe is held back, never sent to be counted lost."""
        return (due + self.answer_reserve() <= hard_end + SCHEDULE_SLACK
                and now + 2 * self.slowest_ns / 1e9 + self.settings.spread_s < hard_end)

    def loop(self, interrupts: Interrupts, started: float) -> None:
        settings = self.settings
        hard_end = started + settings.deadline if settings.deadline is not None else None
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            if interrupts.wakeup is not None:
                selector.register(interrupts.wakeup, selectors.EVENT_READ)
            next_send = started
            end_at: Optional[float] = hard_end
            sending = True
            while not interrupts.requested:
                now = time.monotonic()
                if (sending and now >= next_send and settings.count is None
                        and hard_end is not None and self.next_seq > 0
                        and not self.last_chance(next_send, now, hard_end)):
                    sending = False  # -w: no probe that cannot get its answer in time
                    # (the first always goes, as ping(8)'s: -w shorter than -i is one probe)
                if sending and now >= next_send:
                    self.send()
                    if self.next_seq == 1 and not settings.json:
                        self._print(self.dialect.banner(self.settings, self.path.text()))
                        # (after the first send, so errors come alone)
                    # Keep the average rate even when a wakeup comes late (epoll counts
                    # whole ms), but after a real stall start afresh instead of bursting.
                    next_send += settings.interval
                    if next_send < now - MAX_CATCH_UP:
                        next_send = now
                    if settings.count is not None and self.next_seq >= settings.count:
                        sending = False
                        # the wait covers the responders' --spread delay too
                        end_at = min(now + settings.wait + settings.spread_s,
                                     hard_end or float("inf"))
                if end_at is not None and now >= end_at:
                    return
                now = time.monotonic()
                timeout = max(0.0, next_send - now) if sending else None
                if end_at is not None:  # the end comes on time, not a millisecond late
                    timeout = min(_timeout(end_at - now), timeout if timeout is not None
                                  else float("inf"))
                for key, _events in selector.select(timeout):
                    if key.fileobj is self.sock:
                        self.receive()
                    else:
                        interrupts.drain()
                if interrupts.interim:
                    interrupts.interim = False
                    self.interim()

    def _settle_names(self, wait: float) -> None:
        self.names.settle(wait)
        for stats in self.responders:
            stats.dns_name = self.names.name(stats.address.split("%")[0]) or stats.dns_name

    def interim(self) -> None:
        """SIGQUIT: the statistics so far, on standard error, as ping does, under a header
        that says they are interim (#20.13); the run goes on."""
        self._settle_names(0)
        header, *lines = self.statistics()
        self._print(header.replace(" statistics ---", " statistics so far ---"), sys.stderr)
        for line in lines:
            self._print(line, sys.stderr)

    def statistics(self) -> list[str]:
        return summary.statistics(self.settings.target, self.responders, self.counts,
                                  self.settings.expect, self.dialect.title.lower())

    def report(self, duration_s: float, started: float) -> None:
        s = self.settings
        settle = 0.0 if s.numeric else 1.0
        if s.deadline is not None:  # -w bounds the lookups too
            settle = max(0.0, min(settle, started + s.deadline - time.monotonic()))
        self._settle_names(settle)
        self.duration_s = duration_s
        notes = self.dialect.notes(s, self.responders, self.counts)
        found_hints = self.dialect.hints(s, self.path.text(), self.responders, self.counts,
                                         self.no_group)
        if s.json:
            document = summary.json_document(s, self.session, self.responders, self.counts,
                                             duration_s, self.path.text(),
                                             not self.no_group, notes, found_hints)
            self._print(json.dumps(document, indent=2))
            return
        if not s.quiet:
            self._print("")
        for line in self.statistics():
            self._print(line)
        for line in notes:
            self._print(f"note: {line}")
        for line in found_hints:
            self._print(f"hint: {line}")
