"""RTT statistics of one responder (or one path of it) in fixed memory: min/avg/max/mdev
and the median."""

from __future__ import annotations

import array
import math
import random
import statistics
from typing import Optional


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
