"""Who may be echoed: real peers only, the source ACL and the per-source rate limit.

An echo responder is a reflector; these keep it from being one against
others. First, a source that cannot be a real peer is never answered: the
kernel accepts source 0.0.0.0 on link-local groups (224.0.0.0/24), and an echo
sent to ("0.0.0.0", port) is delivered to a local service on 127.0.0.1 as if
from 127.0.0.1 -- a peer on the LAN could inject datagrams into this host's
loopback services. Both run on every datagram, so they work on integers: the ACL as
(network, mask) pairs, the rate limit as a token bucket per source address in
an LRU table whose size is capped (memory stays bounded however many
addresses a flood forges).
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict
from typing import Optional

from .schema import Listener

MAX_TRACKED_SOURCES = 65536

# First octets of IPv4 sources that cannot be a real peer: "this network" (0/8),
# loopback (127/8), multicast (224/4), reserved (240/4) and broadcast. Checked on
# the text recvmsg returns, so the common case costs one partition and a set lookup.
_IMPOSSIBLE_FIRST_OCTETS = frozenset(["0", "127"] + [str(n) for n in range(224, 256)])


def impossible_source(address: str) -> bool:
    """True if *address* (dotted IPv4) cannot be the source of a real peer's datagram
    arriving on a network interface (lo aside: see Policy.loopback_peers)."""
    return address.partition(".")[0] in _IMPOSSIBLE_FIRST_OCTETS


def _address_int(address: str) -> int:
    return struct.unpack("!I", socket.inet_aton(address))[0]


class SourceRateLimiter:
    """Token bucket per source address: *rate* datagrams/s, bursts of *burst*."""

    def __init__(self, rate: float, burst: int, capacity: int = MAX_TRACKED_SOURCES) -> None:
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # addr -> [tokens, time]

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.capacity:
                self._buckets.popitem(last=False)  # forget the least recently seen source
            self._buckets[source] = [self.burst - 1.0, now]
            return True
        self._buckets.move_to_end(source)
        tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False


class Policy:
    def __init__(self, listener: Listener) -> None:
        # A responder joined on lo answers this host's own clients (`make run`): there,
        # and only there, 127.0.0.0/8 is a real peer. (The kernel drops 127/8 sources
        # arriving on any other interface, unless net.ipv4.conf.*.route_localnet=1.)
        self.loopback_peers = False
        self._networks: Optional[tuple[tuple[int, int], ...]] = None
        if listener.allow is not None:
            self._networks = tuple((int(net.network_address), int(net.netmask))
                                   for net in listener.allow)
        self.limiter: Optional[SourceRateLimiter] = None
        if listener.rate_limit is not None:
            self.limiter = SourceRateLimiter(listener.rate_limit.rate, listener.rate_limit.burst)

    def verdict(self, source: str, now: float) -> Optional[str]:
        """None to echo, or the drop reason ("source", "acl", "rate")."""
        first_octet = source.partition(".")[0]
        if first_octet in _IMPOSSIBLE_FIRST_OCTETS and not (
                first_octet == "127" and self.loopback_peers):
            return "source"
        if self._networks is not None:
            address = _address_int(source)
            if not any(address & mask == network for network, mask in self._networks):
                return "acl"
        if self.limiter is not None and not self.limiter.allow(source, now):
            return "rate"
        return None
