"""Who is answered and how often: the allow list of source networks and the per-source
rate limit, and their checks.

A listener has both (listener.py), and so has the ssmping listener (endpoints.py), which
takes the top-level ones; daemon/policy.py enforces them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional, Union

from .values import Invalid, MappingCheck, Spelled, each_item, integer, show

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class RateLimit(Spelled):
    """Token bucket per source address: *rate* datagrams per second, bursts of *burst*."""

    rate: float = 1000.0
    burst: int = 2000

    def spelled(self) -> str:
        return f"{{rate: {self.rate:g}, burst: {self.burst}}}"


_ALLOW_ALLOWED = ("allowed: an address or CIDR such as 10.0.0.0/8, 192.0.2.7 or "
                  "2001:db8::/32")


def check_allow(value: Any) -> Optional[tuple[Network, ...]]:
    """Source networks; null is any source. Every bad item is a problem of its own."""
    if value is None:
        return None
    if isinstance(value, list) and not value:
        raise Invalid("[] (an empty list) would answer no source at all: list the sources to "
                      "answer, e.g. [10.0.0.0/8, 2001:db8::/32], or write allow: null to answer "
                      "any source")
    if not isinstance(value, list):
        raise Invalid(f"{show(value)} is not a list of source networks (allowed: e.g. "
                      "[10.0.0.0/8, 192.0.2.7, 2001:db8::/32], or null for any source)")
    return tuple(each_item(value, _source_network))


def _source_network(item: Any) -> Network:
    """One item of allow: an address (a /32 or /128) or a network without host bits."""
    try:
        network = ipaddress.ip_network(item, strict=False) if isinstance(item, str) else None
    except ValueError:
        network = None
    if network is None:
        raise Invalid(f"{show(item)} is not an IP network ({_ALLOW_ALLOWED})")
    if network.version == 6 and network.network_address.scope_id:
        raise Invalid(f"{show(item)}: no %zone in allow ({_ALLOW_ALLOWED})")
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is not None and network.prefixlen >= 96:  # no datagram ever comes from one
        raise Invalid(f"{show(item)} is an IPv4-mapped address (the IPv6 sockets are IPv6-only, "
                      f"so none arrives from it): write "
                      f"{ipaddress.ip_network(f'{mapped}/{network.prefixlen - 96}')}")
    host = ipaddress.ip_interface(item).ip
    if host != network.network_address:
        raise Invalid(f"{show(item)} has host bits set: write {network} for the network, or "
                      f"{host}/{network.max_prefixlen} for the one address")
    return network


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 10**7:
        raise Invalid(f"{show(value)} is not a rate (allowed: 1..10000000 datagrams per second "
                      "per source)")
    return float(value)


def _burst(value: Any) -> int:
    return integer(value, 1, 10**7)


check_rate_limit = MappingCheck(
    RateLimit, {"rate": _rate, "burst": _burst},
    "a rate limit (allowed: off, or a mapping such as {rate: 1000, burst: 2000})", off=False)
