"""Replies held back for `mcast-echo ping --spread MS`: a bounded heap of due times.

A probe may ask every responder to delay its echo by a delay drawn uniformly from 0..MS
milliseconds, fresh for each reply, so that a thousand responders do not answer in the
same millisecond (as mDNS does, RFC 6762). The echo paths hand such an echo to
``hold``; the daemon's loop wakes at ``next_due`` and calls ``send_due``, which sends
what is due (echosink.send_echo: the residence time is stamped there, just before the
send, so the delay lies inside T3 - T2 and reported RTTs stay true). Never a sleep.

Bounded: at most MAX_HELD replies and MAX_HELD_BYTES of them wait at once; past that
an echo goes out at once, undelayed, and is counted (``overflowed``). The rate limit
and the no-amplification rule were applied when the probe arrived: a held echo is the
one echo of its probe, never larger than it.
"""

from __future__ import annotations

import heapq
import itertools
import random
import socket
import time
from typing import Optional

from ..wire.probe import MAX_SPREAD_MS
from .echosink import Destinations, EchoSink, send_echo

MAX_HELD = 4096  # replies waiting at once, all listeners together
MAX_HELD_BYTES = 8 << 20  # ... and their bytes (a probe may be 64 KiB)


class DelayedReplies:
    """The daemon's held echoes, ordered by due time (monotonic seconds)."""

    def __init__(self, max_held: int = MAX_HELD, max_bytes: int = MAX_HELD_BYTES) -> None:
        # The heap itself, one list for the object's life (forget() edits it in place): the
        # daemon's loop tests its truth on every wake-up, a C-level look where len(self)
        # would be a Python call.
        self.waiting: list[tuple[float, int, socket.socket, EchoSink, bytes, Destinations,
                                 Optional[int]]] = []
        self._order = itertools.count()  # ties in due time leave in arrival order
        self._random = random.Random()
        self.max_held, self.max_bytes = max_held, max_bytes
        self.held_bytes = 0
        self.delayed = 0  # echoes sent after their delay
        self.overflowed = 0  # echoes sent at once: the heap was full

    @property
    def next_due(self) -> float:
        return self.waiting[0][0] if self.waiting else float("inf")

    def delay(self, spread_ms: int) -> float:
        """A fresh delay in seconds, uniform in 0..min(spread_ms, MAX_SPREAD_MS) ms."""
        return self._random.random() * min(spread_ms, MAX_SPREAD_MS) / 1000

    def hold(self, spread_ms: int, sock: socket.socket, responder: EchoSink, data: bytes,
             destinations: Destinations, received_ns: Optional[int]) -> bool:
        """Keep an echo to send to *destinations* ((address, ifindex) each) after a delay
        drawn from *spread_ms*; False (nothing kept: send it now) when the heap is full."""
        if len(self.waiting) >= self.max_held or self.held_bytes + len(data) > self.max_bytes:
            self.overflowed += 1
            return False
        due = time.monotonic() + self.delay(spread_ms)
        heapq.heappush(self.waiting, (due, next(self._order), sock, responder, data,
                                    destinations, received_ns))
        self.held_bytes += len(data)
        return True

    def send_due(self, now: float) -> None:
        """Send every echo due by *now*."""
        heap = self.waiting
        while heap and heap[0][0] <= now:
            _due, _order, sock, responder, data, destinations, received_ns = heapq.heappop(heap)
            self.held_bytes -= len(data)
            if all(send_echo(sock, data, address, ifindex, responder, received_ns)
                   for address, ifindex in destinations):  # as the paths count: all went
                responder.echoed += 1
                responder.echoed_bytes += len(data)
                self.delayed += 1

    def forget(self, responder: EchoSink) -> None:
        """Drop the echoes of a responder that closes (a reload removed its listener)."""
        kept = [entry for entry in self.waiting if entry[3] is not responder]
        if len(kept) != len(self.waiting):
            heapq.heapify(kept)
            self.waiting[:] = kept
            self.held_bytes = sum(len(entry[4]) for entry in kept)

    def status(self) -> str:
        """`spread: 3 held, 120 delayed, 0 over the cap`; "" when none was ever held."""
        if not (self.waiting or self.delayed or self.overflowed):
            return ""
        return (f"spread: {len(self.waiting)} held, {self.delayed} delayed, "
                f"{self.overflowed} over the cap")
