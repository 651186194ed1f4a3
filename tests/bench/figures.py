"""Figures over `make bench`'s runs: a median and its spread, CPU per echo, how a rate and a
verdict are written. Pure functions; report.py and ratios.py share them."""

from __future__ import annotations

import statistics
from typing import Optional


class Spread:
    """Median, min and max of one figure over the runs (empty if never measured)."""

    def __init__(self, values: list[float]) -> None:
        self.values = [v for v in values if v is not None and v >= 0]

    def __bool__(self) -> bool:
        return bool(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


def cpu_us_per_echo(figures: dict) -> Optional[float]:
    if figures.get("responder_cpu_s", -1) < 0 or not figures.get("echoes"):
        return None
    return figures["responder_cpu_s"] / figures["echoes"] * 1e6


def other_cpu(figures: dict) -> Optional[float]:
    """CPU seconds per second that processes other than the generator and the responder
    took during a measurement: another job on a shared machine shows here."""
    if figures.get("machine_busy_s", -1) < 0 or figures.get("responder_cpu_s", -1) < 0:
        return None
    taken = figures["machine_busy_s"] - figures["responder_cpu_s"] - figures["self_cpu_s"]
    return max(0.0, taken) / figures["seconds"]


def kilo(value: float) -> str:
    return f"{value / 1000:.0f} k" if value >= 10_000 else f"{value / 1000:.1f} k"


def ratio(value: Spread, reference: Optional[Spread]) -> str:
    if not value or not reference:
        return ""
    return f" ({value.median / reference.median:.2f}×)"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"
