"""Who may be echoed: real peers only, the source ACL and the per-source rate limit.

An echo responder is a reflector; these keep it from being one against
others. First, a source that cannot be a real peer is never answered: the
kernel accepts source 0.0.0.0 on link-local groups (224.0.0.0/24), and an echo
sent to ("0.0.0.0", port) is delivered to a local service on 127.0.0.1 as if
from 127.0.0.1 -- a peer on the LAN could inject datagrams into this host's
loopback services. Source port 0 is no peer's either (an echo to it fails).

Nor is a source that is one of this host's own addresses when the datagram came
in on an interface other than lo ("own-address"): the echo would go to whatever
local service listens on that address and port. IPv6 accepts such datagrams
from the wire (a global address of any interface, or the arrival interface's
link-local one); IPv4 drops them as martians unless accept_local is set, so
there the rule applies only where some interface has accept_local=1 (it then
costs one set look-up per batch, and nothing otherwise). A probe this host sends
to its own responder through a real interface comes back looped with the same
source and interface as a forged one: it is dropped too (the README says how to
probe from the host itself). The addresses are re-read (OwnAddresses) at most
once a second, when a datagram needs them: no netlink, no timer.

All three run on every datagram, so they work on integers: a source is its
four address bytes read as one native integer ("raw", as they sit in a
sockaddr_in; byte order does not matter to masks or to a dict). The fast echo
path reads those straight from its receive buffers; the plain path converts
recvmsg's text once. The rate limit is a token bucket per source (one float
each, see SourceRateLimiter) in a table of two generations: the current one
fills to half the capacity, then becomes the old one (sources seen again move
back), so memory is bounded however many addresses a flood forges, at O(1) per
datagram and with no reordering. The bound is the daemon's, not a listener's:
MAX_TRACKED_SOURCES in all, split evenly between the listeners that rate-limit
(share_sources), so 30 listeners under a forged-source flood hold what one does.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time
from typing import Iterable, Optional, Union

from ..net import ifaddr
from ..net.ancillary import ip_arrival
from ..schema.policy import Network, RateLimit

Networks = tuple[Network, ...]

MAX_TRACKED_SOURCES = 65536  # rate-limited sources tracked by the whole daemon (~7 MiB)
MIN_TRACKED_SOURCES = 2  # a listener's share is never below one source per generation

# First octets of IPv4 sources that cannot be a real peer: "this network" (0/8),
# loopback (127/8), multicast (224/4), reserved (240/4) and broadcast.
_IMPOSSIBLE_FIRST_OCTETS = frozenset([0, 127, *range(224, 256)])
LOOPBACK_OCTET = 127
LOOPBACK_IFINDEX = 1  # lo is interface 1 of every network namespace (the kernel's LOOPBACK_IFINDEX)
OWN_ADDRESSES_REFRESH = 1.0  # seconds an address added (or removed) may go unseen (see below)
OWN_ADDRESSES_SHARE = 100  # re-reading them takes at most 1/100 of the loop's time


def raw_address(address: str) -> int:
    """Dotted IPv4 text as the native integer of its four bytes (see the module doc)."""
    return struct.unpack("=I", socket.inet_aton(address))[0]


class SourceRateLimiter:
    """Per source: *rate* datagrams/s, bursts of *burst* -- a token bucket, kept as GCRA.

    GCRA (the generic cell rate algorithm) is the token bucket written as one number per
    source, its "theoretical arrival time": the time at which the bucket would be
    full again. A datagram may pass while that time is less than a burst ahead of now;
    each one that passes moves it on by 1/rate. One float per source keeps the table
    small (about 100 bytes a source) and the update cheap.

    The time is kept in tokens (seconds x rate), not in seconds, so that a datagram that
    passes adds exactly 1 to it. Seconds would add 1/rate, which a float cannot hold
    exactly: the error of a burst's additions grows with the clock (a monotonic clock
    counts the host's uptime), and at 10^5 s it made the last datagram of a burst of 20
    at 10/s fail -- a host up for a day refused what its configuration allows. What
    rounding is left (now x rate is rarely a whole number) is a tiny fraction of a token.
    """

    def __init__(self, rate: float, burst: int, capacity: int = MAX_TRACKED_SOURCES) -> None:
        self.rate = rate
        self.burst = burst
        self._current: dict[int, float] = {}  # raw source -> theoretical arrival, in tokens
        self._old: dict[int, float] = {}
        self.resize(capacity)

    def resize(self, capacity: int) -> None:
        """Track at most *capacity* sources from now on (the daemon's share for this
        listener, see share_sources); a shrink keeps the most recently seen ones."""
        self.capacity = max(MIN_TRACKED_SOURCES, capacity)
        generation = self._generation = self.capacity // 2
        # Each generation within the new size, or the next turn could hold more.
        if len(self._current) > generation:
            self._old, self._current = _newest(self._current, generation), {}
        elif len(self._old) > generation:
            self._old = _newest(self._old, generation)

    def admit(self, source: int, count: int, now: float) -> int:
        """How many of *count* datagrams from *source* (raw) arriving at *now* may pass."""
        now_tokens = now * self.rate
        arrival = self._current.get(source)
        if arrival is None:
            arrival = self._old.pop(source, now_tokens)
            if len(self._current) >= self._generation:
                self._old, self._current = self._current, {}
        if arrival < now_tokens:
            arrival = now_tokens
        room = int(now_tokens - arrival + self.burst + 0.001)  # 0.001: rounding, not a token
        allowed = count if room >= count else max(room, 0)
        self._current[source] = arrival + allowed
        return allowed


class OwnAddresses:
    """This host's own addresses, as the checks compare them, re-read from the kernel at most
    every OWN_ADDRESSES_REFRESH seconds, by the first datagram that comes after that.

    IPv6: every address of every interface as a 128-bit integer; a link-local one (fe80::/10,
    whose source a datagram carries with its arrival interface as scope) with that interface's
    index above bit 128, so that it matches only on its own link (see ipv6_key). IPv4: raw
    integers (see the module doc), or None while no interface has accept_local=1 (the kernel
    then drops such datagrams itself).

    A re-read runs on the echo loop: about 40 us with a few interfaces, a few ms with a
    thousand (one small file per interface for accept_local, and /proc/net/if_inet6, parsed
    only when it changed). It never takes more than 1/OWN_ADDRESSES_SHARE of the loop's time:
    where it costs more, the interval grows past OWN_ADDRESSES_REFRESH.
    """

    def __init__(self) -> None:
        self.ipv6_keys: frozenset[int] = frozenset()
        self.ipv4_keys: Optional[frozenset[int]] = None
        self._table: Optional[str] = None  # /proc/net/if_inet6 as last parsed
        self.due = float("-inf")  # refresh() when now reaches it (Policy.verdict reads it)

    def ipv6(self, now: float) -> frozenset[int]:
        if now >= self.due:
            self.refresh(now)
        return self.ipv6_keys

    def ipv4(self, now: float) -> Optional[frozenset[int]]:
        if now >= self.due:
            self.refresh(now)
        return self.ipv4_keys

    def refresh(self, now: float) -> None:
        started = time.monotonic()
        table = ifaddr.ipv6_table()
        if table != self._table:
            self._table = table
            self.ipv6_keys = frozenset(ipv6_key(value, index if _link_local(value) else 0)
                                       for index, value in ifaddr.ipv6_address_values(table))
        self.ipv4_keys = (frozenset(raw_address(address) for _, address in ifaddr.ipv4_addresses())
                      if ifaddr.ipv4_accepts_local() else None)
        cost = time.monotonic() - started
        self.due = now + max(OWN_ADDRESSES_REFRESH, cost * OWN_ADDRESSES_SHARE)


OWN_ADDRESSES = OwnAddresses()  # one per process: the host's addresses are the same for all


def _newest(table: dict[int, float], count: int) -> dict[int, float]:
    return dict(reversed(list(itertools.islice(reversed(table.items()), count))))


def share_sources(limiters: Iterable[SourceRateLimiter],
                  total: int = MAX_TRACKED_SOURCES) -> int:
    """Split the daemon's bound evenly between *limiters* (called when listeners come and
    go: at the start and after each reload); returns each one's share."""
    limiters = list(limiters)
    share = max(MIN_TRACKED_SOURCES, total // max(1, len(limiters)))
    for limiter in limiters:
        limiter.resize(share)
    return share


class Policy:
    """The checks of one listener, for its family: IPv4 sources are raw integers (see
    the module doc), IPv6 ones the integer of their 16 bytes."""

    def __init__(self, ipv6: bool, allow: Optional[Networks], rate_limit: Optional[RateLimit],
                 sources: Optional[tuple[str, ...]] = None,
                 tracked_sources: int = MAX_TRACKED_SOURCES) -> None:
        """*allow*: the networks whose sources are answered (None: all; those of the other
        family are ignored); *rate_limit*: per source (None: off); *sources*: an SSM
        listener's senders (None: any source); *tracked_sources*: this listener's share
        of the daemon's bound (share_sources). Whether lo is joined (loopback_peers)
        changes with the memberships: the owner sets it."""
        self.ipv6 = ipv6
        address = _ipv6_int if ipv6 else raw_address
        self.networks: Optional[tuple[tuple[int, int], ...]] = None  # (network, mask)
        if allow is not None:
            self.networks = tuple(
                (address(str(net.network_address)), address(str(net.netmask)))
                for net in allow if (net.version == 6) == ipv6)
        # SSM: the kernel only delivers the joined (source, group) pairs; checked here too,
        # so that the rule holds whatever the kernel's filter does.
        self.sources: Optional[frozenset[int]] = None
        if sources is not None:
            self.sources = frozenset(address(source) for source in sources)
        self.limiter: Optional[SourceRateLimiter] = None
        if rate_limit is not None:
            self.limiter = SourceRateLimiter(rate_limit.rate, rate_limit.burst, tracked_sources)
        self.refused_octets = _IMPOSSIBLE_FIRST_OCTETS
        self.loopback_peers = False
        self.own_addresses = OWN_ADDRESSES
        # Whether admitted_by_acl can refuse anything ('allow' or SSM 'sources' set): an
        # attribute, not a property, as the fast path reads it per batch (a Policy is
        # built anew when either changes).
        self.filters_sources = self.networks is not None or self.sources is not None

    @property
    def loopback_peers(self) -> bool:
        """A responder joined on lo answers this host's own clients (`make run`): there,
        and only there, 127.0.0.0/8 (and ::1) is a real peer. (The kernel drops 127/8
        sources arriving on any other interface, unless net.ipv4.conf.*.route_localnet=1.)"""
        return LOOPBACK_OCTET not in self.refused_octets

    @loopback_peers.setter
    def loopback_peers(self, value: bool) -> None:
        self.refused_octets = (_IMPOSSIBLE_FIRST_OCTETS - {LOOPBACK_OCTET} if value
                               else _IMPOSSIBLE_FIRST_OCTETS)

    def admitted_by_acl(self, source: int) -> bool:
        """Whether *source* is inside 'allow' (always, when 'allow' is null) and, for an
        SSM listener, one of its 'sources'."""
        if self.sources is not None and source not in self.sources:
            return False
        networks = self.networks
        if networks is None:
            return True
        for network, mask in networks:
            if source & mask == network:
                return True
        return False

    def refusal(self, source: int) -> str:
        """Which check admitted_by_acl failed: "ssm" or "acl"."""
        return "ssm" if self.sources is not None and source not in self.sources else "acl"

    def own_address(self, key: int, arrival: Optional[int], now: float) -> bool:
        """Whether a datagram from *key* (a raw IPv4 source, or ipv6_key of an IPv6 one) that
        arrived on interface *arrival* is forged with this host's own address: it did not
        come in on lo (None, unknown, counts as not lo), and the address is ours."""
        own = self.own_addresses.ipv6(now) if self.ipv6 else self.own_addresses.ipv4(now)
        return own is not None and key in own and arrival != LOOPBACK_IFINDEX

    def verdict(self, source: tuple, arrival: Union[Optional[int], list],
                now: float) -> Optional[str]:
        """None to echo, or the drop reason ("source", "own-address", "ssm", "acl", "rate").

        *source* is the sender's socket address as recvmsg gives it ((address, port), or
        (address, port, flowinfo, scope) for IPv6); *arrival* the index of the interface
        the datagram came in on (IP_PKTINFO / IPV6_PKTINFO), None if unknown -- or
        recvmsg's ancillary data, read (ancillary.ip_arrival) only when the own-address
        rule needs the index: the same verdict, and the plain path's common echo skips
        the read."""
        address = source[0]
        if source[1] == 0:
            return "source"
        # own_address(), written out: this runs for every datagram of the plain path
        own = self.own_addresses
        if now >= own.due:
            own.refresh(now)
        if self.ipv6:
            key = _ipv6_int(address)
            if impossible_ipv6(key, self.loopback_peers):
                return "source"
            if own_ipv6_key(key, source[3]) in own.ipv6_keys \
                    and _arrival(arrival) != LOOPBACK_IFINDEX:
                return "own-address"
        else:
            if int(address.partition(".")[0]) in self.refused_octets:
                return "source"
            key = raw_address(address)
            mine = own.ipv4_keys
            if mine is not None and key in mine and _arrival(arrival) != LOOPBACK_IFINDEX:
                return "own-address"
        if not self.admitted_by_acl(key):
            return self.refusal(key)
        if self.limiter is not None and self.limiter.admit(key, 1, now) == 0:
            return "rate"
        return None


_IPV4_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96


def _arrival(arrival: Union[Optional[int], list]) -> Optional[int]:
    """verdict()'s *arrival* as an interface index (see there)."""
    return ip_arrival(arrival)[0] if isinstance(arrival, list) else arrival


def _ipv6_int(address: str) -> int:
    return int.from_bytes(socket.inet_pton(socket.AF_INET6, address.partition("%")[0]), "big")


def ipv6_key(value: int, scope: int) -> int:
    """An IPv6 address (integer) as OwnAddresses keeps it: a link-local one's interface
    (*scope*, 0 for any other address) above its 128 bits."""
    return value | scope << 128


def own_ipv6_key(value: int, scope: int) -> int:
    """The key under which OwnAddresses.ipv6_keys would hold a source *value* (an IPv6
    address as an integer) that a datagram carries with scope id *scope*."""
    return value | scope << 128 if value >> 118 == LINK_LOCAL_PREFIX else value


LINK_LOCAL_PREFIX = 0xFE80 >> 6  # fe80::/10: an address's top 10 bits


def _link_local(value: int) -> bool:
    return value >> 118 == LINK_LOCAL_PREFIX


def impossible_ipv6(value: int, loopback_peers: bool) -> bool:
    """An IPv6 source (an integer) that cannot be a real peer: the unspecified address,
    loopback (off lo), multicast (ff00::/8), IPv4-mapped. Every one has 0x00 or 0xff as
    its first byte, so a source whose first byte is neither needs no call."""
    if value >> 120 == 0xFF or value == 0 or value >> 32 == _IPV4_MAPPED >> 32:
        return True
    return value == 1 and not loopback_peers
