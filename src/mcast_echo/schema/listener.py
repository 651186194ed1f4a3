"""A listener: one group on one port, its socket's settings, and the check of each of its
keys and of the keys together (listener_problems).

The group rules come from addresses.py, the allow list and rate limit from policy.py;
keys.py names which check each key runs. Nothing here touches a file or the network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Optional, Union

from ..addresses import (
    BROADCAST,
    MULTICAST_RANGES,
    PRIVATE_GROUPS,
    PRIVATE_RANGES,
    SSM_RANGES,
    host_port,
    ipv6_scope,
    is_ipv4_mapped,
    is_link_scope_group,
    is_multicast,
    is_ssm_group,
    not_a_group,
    refused_group,
)
from ..wire.udp import MAX_UDP6_PAYLOAD, MAX_UDP_PAYLOAD
from .policy import Network, RateLimit
from .values import Invalid, address, integer, parse_size, raise_any, show

REPLY_MODES = ("unicast", "group", "both")
ALL_INTERFACES = "all"


@dataclass(frozen=True)
class Listener:
    """One multicast group on one port, and how its socket is set up.

    *group* is IPv4 or IPv6 text in its normal (compressed) form; *sources* hold the
    SSM sources (232.0.0.0/8, ff3x::/32), of the group's family, and are None for an
    any-source group. *interface* is a name, an address of this host, None (the
    route to the group) or ALL_INTERFACES.
    """

    group: str = "224.3.29.71"
    port: int = 9999
    interface: Optional[str] = None  # a name ("eth0"), an address, "all"; None: route to group
    sources: Optional[tuple[str, ...]] = None  # SSM: the only senders joined and answered
    reply: str = "unicast"  # unicast (to the sender) | group | both
    recv_buffer: Optional[int] = None  # bytes; None: the kernel default (rmem_default)
    send_buffer: Optional[int] = None  # bytes; None: the kernel default (wmem_default)
    ttl: int = 1  # IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS
    loopback: bool = True
    max_datagram: int = MAX_UDP_PAYLOAD
    allow: Optional[tuple[Network, ...]] = None
    rate_limit: Optional[RateLimit] = RateLimit()  # None: off
    share_port: bool = False  # True: SO_REUSEADDR, another process may bind group:port too

    @property
    def ipv6(self) -> bool:
        return ":" in self.group

    @property
    def ssm(self) -> bool:
        return self.sources is not None

    @property
    def where(self) -> str:
        """group:port as log lines and STATUS show it: [ff15::1]:5000 for IPv6."""
        return host_port(self.group, self.port)

    @property
    def link_scope(self) -> bool:
        """An IPv6 group of interface- or link-local scope (ff01::/16, ff02::/16 and the
        flagged forms): it only means something on one interface, so needs a named one."""
        return is_link_scope_group(self.group)

    @property
    def identity(self) -> tuple[str, int, Optional[str]]:
        """What a socket and its membership are made of: changing it means a new socket."""
        return (self.group, self.port, self.interface)


# ----------------------------------------------------------------- each key of a listener


def check_group(value: Any) -> str:
    addr = address(value)
    if addr is None:
        raise Invalid(f"{show(value)} is not a multicast group address (allowed: IPv4 "
                      f"{MULTICAST_RANGES[4]} such as 224.3.29.71, or IPv6 "
                      f"{MULTICAST_RANGES[6]} such as ff15::1234)")
    if addr.version == 6 and addr.scope_id:
        raise Invalid(f"{show(value)}: write the group without %{addr.scope_id} and the "
                      f"interface apart (interface: {addr.scope_id})")
    if not is_multicast(addr):
        if addr.version == 4:
            raise Invalid(f"{value} is not a multicast address (allowed: "
                          f"{MULTICAST_RANGES[4]}, e.g. 224.3.29.71; use {PRIVATE_RANGES[4]} "
                          "for a private group)")
        raise Invalid(f"{not_a_group(addr)} (allowed: {MULTICAST_RANGES[6]}, e.g. ff15::1234; "
                      f"use {PRIVATE_RANGES[6]} for a private group)")
    refused = refused_group(addr)
    if refused is not None:
        raise Invalid(f"{addr} is {refused}: not free for an echo responder; use an "
                      f"administratively scoped group ({PRIVATE_GROUPS[addr.version]})")
    if addr.version == 6 and ipv6_scope(addr) in (0, 0xF):
        raise Invalid(f"{addr} has scope {ipv6_scope(addr):x}, which is reserved "
                      "(RFC 7346); use a scope from 1 to e, e.g. ff15::1234")
    return str(addr)


_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_INTERFACE_ALLOWED = ("allowed: a name such as eth0, an IPv4 or IPv6 address of this host, "
                      f"{ALL_INTERFACES} for every multicast interface, or null for the route "
                      "to the group")


def check_interface(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bool):  # YAML 1.1 reads off/no/false (on/yes/true) as booleans
        raise Invalid(f"{'on, yes or true' if value else 'off, no or false'} is a boolean in "
                      "YAML, not an interface: write interface: null for the route to the group "
                      f"(there is no off; {_INTERFACE_ALLOWED})")
    if not isinstance(value, str) or not value:
        raise Invalid(f"{show(value)} is not an interface ({_INTERFACE_ALLOWED})")
    if value == ALL_INTERFACES:
        return value
    if value[0].isdigit() and value.count(".") == 3:
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise Invalid(f"{value} is not a valid IPv4 address") from None
    if "::" in value or value.count(":") >= 2:  # an alias name (eth0:1) has one colon
        try:
            addr = ipaddress.IPv6Address(value)
        except ValueError:
            raise Invalid(f"{show(value)} is not a valid IPv6 address") from None
        if addr.scope_id:
            raise Invalid(f"{show(value)}: name the interface instead "
                          f"(interface: {addr.scope_id})")
        return str(addr)
    if not _IFNAME.match(value) or value in (".", ".."):
        raise Invalid(f"{value!r} is not a valid interface name (1-15 characters, "
                      "no spaces or slashes, e.g. eth0)")
    return value


def _unicast_problem(addr: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> Optional[str]:
    """Why *addr* cannot be the unicast address of a sender, or None."""
    if is_ipv4_mapped(addr):  # before any is_*
        return f"an IPv4-mapped address (write {addr.ipv4_mapped})"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_unspecified or (addr.version == 4 and addr in _THIS_NETWORK):
        return "unspecified"
    if addr.is_loopback:
        return "a loopback address"
    if addr == BROADCAST:
        return "the broadcast address"
    if addr.version == 6 and addr.scope_id:
        return "written with a %zone (the listener's interface is the zone)"
    return None


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_SOURCES_ALLOWED = "allowed: e.g. [192.0.2.5, 192.0.2.6] for an SSM group, or null"


def check_sources(value: Any) -> Optional[tuple[str, ...]]:
    """SSM sources: unicast addresses of one family, no repeats; sorted, normalized text.
    Every bad item is a problem of its own."""
    if value is None:
        return None
    if isinstance(value, list) and not value:
        raise Invalid("[] (an empty list) would join no sender: list the senders, e.g. "
                      "[192.0.2.5, 192.0.2.6], or write sources: null for an any-source group")
    if not isinstance(value, list):
        raise Invalid(f"{show(value)} is not a list of source addresses ({_SOURCES_ALLOWED})")
    seen: dict[Any, int] = {}
    problems = []
    for index, item in enumerate(value):
        addr = address(item)
        if addr is None:
            problems.append(Invalid(f"{show(item)} is not an IP address ({_SOURCES_ALLOWED})",
                                    at=index))
            continue
        problem = _unicast_problem(addr)
        if problem is not None:
            problems.append(Invalid(f"{show(item)} is {problem}: a source is the unicast "
                                    "address of a sender", at=index))
            continue
        first = next(iter(seen), addr)
        if addr.version != first.version:
            problems.append(Invalid(f"{addr} is IPv{addr.version} but {first} is "
                                    f"IPv{first.version}: the sources of a listener are of "
                                    "one family, the group's", at=index))
        elif addr in seen:
            problems.append(Invalid(f"{addr} is listed twice (items {seen[addr] + 1} and "
                                    f"{index + 1}); keep one", at=index))
        else:
            seen[addr] = index
    raise_any(problems)
    return tuple(str(addr) for addr in sorted(seen))


def check_reply(value: Any) -> str:
    if not isinstance(value, str) or value not in REPLY_MODES:
        raise Invalid(f"{show(value)} is not a reply mode (allowed: unicast to the sender, "
                      "group to the group, or both)")
    return value


def check_buffer(value: Any) -> Optional[int]:
    return None if value is None else parse_size(value)


def check_ttl(value: Any) -> int:
    return integer(value, 0, 255)


def check_max_datagram(value: Any) -> int:
    """An integer; its range depends on the group's family (listener_problems checks it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{show(value)} is not an integer (allowed: 1..{MAX_UDP_PAYLOAD}, "
                      f"or up to {MAX_UDP6_PAYLOAD} for an IPv6 group)")
    return value


# ----------------------------------------------------------------- a listener as a whole
# Checks between the keys of one listener, once each key passed its own check.


def listener_problems(listener: Listener) -> list[tuple[str, Invalid]]:
    """(key, problem) for every way *listener*'s keys contradict each other."""
    group = ipaddress.ip_address(listener.group)
    family = f"IPv{group.version}"
    problems = []
    if is_ssm_group(group) and listener.sources is None:
        problems.append(("group", Invalid(
            f"{group} is a source-specific group ({SSM_RANGES}): list the senders to join "
            "in sources, e.g. sources: [192.0.2.5], or use an any-source group")))
    elif not is_ssm_group(group) and listener.sources is not None:
        problems.append(("sources", Invalid(
            f"{show(listener.sources)} on {group}, an any-source group: sources are only for "
            f"source-specific groups ({SSM_RANGES}); remove them (sources: null)")))
    elif listener.sources is not None:
        for index, source in enumerate(listener.sources):
            if ipaddress.ip_address(source).version != group.version:
                problems.append(("sources", Invalid(
                    f"{source} is not {family} like the group {group}: list sources of the "
                    "group's family", at=index)))
                break
    if listener.allow is not None and all(net.version != group.version
                                          for net in listener.allow):
        problems.append(("allow", Invalid(
            f"{show(listener.allow)} holds no {family} network, so nothing would be answered on "
            f"{group}: add one (e.g. {'2001:db8::/32' if listener.ipv6 else '10.0.0.0/8'}) "
            "or write allow: null")))
    limit = MAX_UDP6_PAYLOAD if listener.ipv6 else MAX_UDP_PAYLOAD
    if not 1 <= listener.max_datagram <= limit:
        hint = "" if listener.ipv6 or not limit < listener.max_datagram <= MAX_UDP6_PAYLOAD else (
            f" (the largest UDP payload over IPv4; up to {MAX_UDP6_PAYLOAD} for an IPv6 group)")
        problems.append(("max_datagram", Invalid(
            f"{show(listener.max_datagram)} is out of range 1..{limit}{hint}")))
    if listener.link_scope and listener.interface in (None, ALL_INTERFACES):
        problems.append(("interface", Invalid(
            f"{show(listener.interface)}, but {group} is a link-scope group: a link-scope "
            "group needs a named interface (e.g. interface: eth0)")))
    return problems
