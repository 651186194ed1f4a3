"""What `mcast-echo ping` learns per responder, and how it is shown: lines, summary, JSON."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .probe import Echo


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


@dataclass
class ResponderStats:
    """Everything one responder (one source address and port) told us during a run."""

    address: str
    port: int
    name: Optional[str] = None  # from the identity trailer; None for a plain echo server
    ifname: Optional[str] = None  # the responder's interface the probe arrived on
    group: Optional[str] = None
    hops: Optional[int] = None  # sent TTL - arrival TTL, from the latest trailer
    arrival_ttl: Optional[int] = None
    reply_ttl: Optional[int] = None  # IP TTL of the latest echo as it reached us
    received: int = 0  # distinct probes echoed intact
    duplicates: int = 0
    truncated: int = 0
    corrupted: int = 0
    no_trailer: int = 0  # intact echoes of probes that asked for a trailer but got none
    rtt_min_ns: int = 0
    rtt_max_ns: int = 0
    rtt_sum_ns: int = 0
    rtt_sum_sq: int = 0
    _seen: bytearray = field(default_factory=bytearray, repr=False)  # bitmap of echoed seqs

    def _mark(self, seq: int) -> bool:
        """Record *seq* as echoed; False when it already was (a duplicate)."""
        byte, bit = divmod(seq, 8)
        if byte >= len(self._seen):
            self._seen.extend(bytes(byte + 1 - len(self._seen) + 64))
        if self._seen[byte] & (1 << bit):
            return False
        self._seen[byte] |= 1 << bit
        return True

    def record(self, echo: Echo, rtt_ns: int, reply_ttl: Optional[int]) -> bool:
        """Count one echo; returns False when it is a duplicate."""
        self.reply_ttl = reply_ttl
        if echo.trailer is not None:
            trailer = echo.trailer
            self.name, self.ifname, self.group = trailer.hostname, trailer.ifname, trailer.group
            self.arrival_ttl = trailer.arrival_ttl
            if trailer.arrival_ttl is not None and echo.header.sent_ttl:
                self.hops = echo.header.sent_ttl - trailer.arrival_ttl
        if echo.truncated:
            self.truncated += 1
            return True
        if echo.corrupted:
            self.corrupted += 1
            return True
        if not self._mark(echo.header.seq):
            self.duplicates += 1
            return False
        if echo.trailer is None:
            self.no_trailer += 1
        if self.received == 0 or rtt_ns < self.rtt_min_ns:
            self.rtt_min_ns = rtt_ns
        self.rtt_max_ns = max(self.rtt_max_ns, rtt_ns)
        self.rtt_sum_ns += rtt_ns
        self.rtt_sum_sq += rtt_ns * rtt_ns
        self.received += 1
        return True

    def identity(self) -> str:
        """`10.0.0.2 (host-b, eth1) hops=1`, or just the address for a plain echo server."""
        text = self.address
        if self.name is not None:
            text += f" ({self.name}, {self.ifname})" if self.ifname else f" ({self.name})"
        if self.hops is not None:
            text += f" hops={self.hops}"
        return text

    def loss_percent(self, transmitted: int) -> float:
        if transmitted == 0:
            return 0.0
        return round(100.0 * (transmitted - min(self.received, transmitted)) / transmitted, 1)

    def rtt_ms(self) -> Optional[dict[str, float]]:
        """min/avg/max/mdev in ms (mdev as ping computes it), None before any intact echo."""
        if self.received == 0:
            return None
        avg = self.rtt_sum_ns / self.received
        variance = max(0.0, self.rtt_sum_sq / self.received - avg * avg)
        return {"min": _ms(self.rtt_min_ns), "avg": _ms(avg), "max": _ms(self.rtt_max_ns),
                "mdev": _ms(math.sqrt(variance))}

    def summary_line(self, transmitted: int) -> str:
        parts = [f"{transmitted} transmitted", f"{self.received} received"]
        for count, label in ((self.duplicates, "duplicates"), (self.truncated, "truncated"),
                             (self.corrupted, "corrupted")):
            if count:
                parts.append(f"+{count} {label}" if label == "duplicates" else f"{count} {label}")
        parts.append(f"{self.loss_percent(transmitted):g}% loss")
        rtt = self.rtt_ms()
        if rtt is not None:
            parts.append("rtt min/avg/max/mdev = "
                         f"{rtt['min']:.3f}/{rtt['avg']:.3f}/{rtt['max']:.3f}/{rtt['mdev']:.3f} ms")
        return f"{self.identity()}: " + ", ".join(parts)

    def to_json(self, transmitted: int) -> dict[str, Any]:
        return {
            "address": self.address, "port": self.port, "name": self.name,
            "interface": self.ifname, "group": self.group, "hops": self.hops,
            "arrival_ttl": self.arrival_ttl, "reply_ttl": self.reply_ttl,
            "transmitted": transmitted, "received": self.received,
            "duplicates": self.duplicates, "truncated": self.truncated,
            "corrupted": self.corrupted, "without_trailer": self.no_trailer,
            "loss_percent": self.loss_percent(transmitted), "rtt_ms": self.rtt_ms(),
        }


def reply_line(stats: ResponderStats, echo: Echo, echo_len: int, rtt_ns: int, fresh: bool) -> str:
    """One ping-style line: `64 bytes from 10.0.0.2 (host-b, eth1) hops=1: seq=3 time=0.412 ms`.

    The byte count is the probe's part of the echo; a trailer is not counted.
    """
    shown = min(echo_len, echo.header.length)
    line = f"{shown} bytes from {stats.identity()}: seq={echo.header.seq}"
    if echo.intact:
        line += f" time={rtt_ns / 1e6:.3f} ms"
    if echo.truncated:
        line += f" (TRUNCATED: {shown} of {echo.header.length} bytes)"
    elif echo.corrupted:
        line += " (CORRUPTED)"
    elif not fresh:
        line += " (DUP!)"
    return line


def sorted_responders(responders: dict[tuple[str, int], ResponderStats]) -> list[ResponderStats]:
    return sorted(responders.values(),
                  key=lambda s: (ipaddress.ip_address(s.address), s.port))


def answered(responders: dict[tuple[str, int], ResponderStats]) -> int:
    """Responders that echoed at least one probe intact: what --expect counts."""
    return sum(1 for s in responders.values() if s.received)


def summary(target: str, responders: dict[tuple[str, int], ResponderStats], transmitted: int,
            expect: int, send_errors: int, foreign: int) -> list[str]:
    lines = [f"--- {target} mcast-echo ping statistics ---"]
    lines.extend(s.summary_line(transmitted) for s in sorted_responders(responders))
    count = answered(responders)
    tail = f"{transmitted} probes transmitted, {count} responder{'s' if count != 1 else ''}"
    if count < expect:
        tail += f" (expected at least {expect})"
    if send_errors:
        tail += f", {send_errors} send errors"
    if foreign:
        tail += f", {foreign} stray datagrams ignored"
    lines.append(tail)
    return lines


def json_document(settings: dict[str, Any], responders: dict[tuple[str, int], ResponderStats],
                  transmitted: int, send_errors: int, foreign: int,
                  duration_s: float) -> dict[str, Any]:
    count = answered(responders)
    return {
        "settings": settings,
        "transmitted": transmitted,
        "send_errors": send_errors,
        "stray_datagrams": foreign,
        "duration_s": round(duration_s, 3),
        "responders": [s.to_json(transmitted) for s in sorted_responders(responders)],
        "responder_count": count,
        "expect": settings["expect"],
        "ok": count >= settings["expect"],
    }
