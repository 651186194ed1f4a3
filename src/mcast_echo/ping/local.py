"""Which responders are this host itself.

A probe sent with loopback on reaches this host's own responder, whose echo comes back
without crossing the network: it proves nothing about the group. So an echo from any
address of this host (net/ifaddr.py lists them; loopback addresses too) is this host's
responder: shown, marked local, and never counted toward --expect, success, the
textfile's responders or /probe (responderstats.py's ``ResponderStats.counted``).
"""

from __future__ import annotations

import ipaddress
import time

from ..net.ifaddr import host_addresses

REFRESH_S = 1.0  # an address unknown to the snapshot re-reads the host's, at most this often


class ThisHost:
    """A predicate: is this address (as ping shows it, `fe80::1%eth0` too) one of this
    host's? Addresses come and go during a run; a miss re-reads them, at most once per
    REFRESH_S, so a flood of new sources costs no more than one read a second."""

    def __init__(self) -> None:
        self._addresses = host_addresses()
        self._read_at = time.monotonic()

    def __call__(self, address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped  # before any is_* test (Python 3.13 answers for it)
        if parsed.is_loopback or parsed in self._addresses:
            return True
        now = time.monotonic()
        if now - self._read_at < REFRESH_S:
            return False
        self._addresses, self._read_at = host_addresses(), now
        return parsed in self._addresses
