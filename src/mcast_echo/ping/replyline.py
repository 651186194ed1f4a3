"""The line `mcast-echo ping` prints for each echo, as ping prints one per reply."""

from __future__ import annotations

from typing import Optional

from ..wire.probe import Echo
from .responderstats import GROUP, LOCAL_MARK, UNICAST, Outcome, ResponderStats


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

