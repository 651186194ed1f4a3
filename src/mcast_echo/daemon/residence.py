"""How long the daemon holds a probe: its residence times, T3 - T2, as a histogram.

T2 is the kernel's receive time of a probe that asks for the trailer, T3 the clock read
just before the send that carries its echo (wire/probe.py): the time the daemon itself
adds to a round trip -- its loop, a batch's walk, a --spread delay. Only probes are
counted (the echo paths call ``observe`` where they stamp one), so the plain datagrams'
fast path carries no work for it. /metrics shows the buckets (collectors.py), STATUS the
p50 and p99 (responder.py).
"""

from __future__ import annotations

import bisect
from typing import Optional

# Upper bounds in seconds: from a fast path's tens of microseconds to a long --spread.
BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
           0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BOUNDS_NS = tuple(round(bound * 1e9) for bound in BUCKETS)


class ResidenceHistogram:
    """Counts per bucket (the last one: above every bound), their sum and count."""

    __slots__ = ("counts", "sum_ns", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum_ns = 0
        self.count = 0

    def observe(self, residence_ns: int) -> None:
        self.counts[bisect.bisect_left(_BOUNDS_NS, residence_ns)] += 1
        self.sum_ns += residence_ns
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count at or below it) per bucket, "+Inf" last: Prometheus' shape."""
        buckets, total = [], 0
        for bound, count in zip((*(repr(b) for b in BUCKETS), "+Inf"), self.counts):
            total += count
            buckets.append((bound, total))
        return buckets

    def quantile(self, q: float) -> Optional[float]:
        """The *q* quantile in seconds, interpolated within its bucket as Prometheus'
        histogram_quantile does (the last bucket's: its lower bound); None before any."""
        if not self.count:
            return None
        rank, below = q * self.count, 0
        for index, count in enumerate(self.counts):
            if count and below + count >= rank:
                if index == len(BUCKETS):
                    return BUCKETS[-1]
                lower = BUCKETS[index - 1] if index else 0.0
                return lower + (BUCKETS[index] - lower) * (rank - below) / count
            below += count
        return BUCKETS[-1]

    def status(self) -> str:
        """`residence p50 41 µs, p99 230 µs (12 probes)`; "" before any probe."""
        p50, p99 = self.quantile(0.5), self.quantile(0.99)
        if p50 is None or p99 is None:
            return ""
        return f"residence p50 {_shown(p50)}, p99 {_shown(p99)} ({self.count} probes)"


def _shown(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 0.001 else f"{seconds * 1e3:.1f} ms"
