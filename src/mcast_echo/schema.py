"""What a configuration holds: the settings objects and the check of each key.

Each check takes a YAML value and returns the typed value or raises Invalid
with the text that follows "key: " in an error line; config.py reads the file,
finds the lines and builds the objects. Nothing here touches a file or the
network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from .addresses import (
    MULTICAST_RANGES,
    PRIVATE_GROUPS,
    PRIVATE_RANGES,
    SSM_RANGES,
    SSMPING_GROUPS,
    host_port,
    ipv6_scope,
    is_ipv4_mapped,
    is_link_scope_group,
    is_multicast,
    is_ssm_group,
    not_a_group,
    refused_group,
)
from .wire.udp import MAX_UDP6_PAYLOAD, MAX_UDP_PAYLOAD

MAX_SHOWN = 60  # characters of a bad value quoted back in a message
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class RateLimit:
    """Token bucket per source address: *rate* datagrams per second, bursts of *burst*."""

    rate: float = 1000.0
    burst: int = 2000


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
    allow: Optional[tuple[Union[ipaddress.IPv4Network, ipaddress.IPv6Network], ...]] = None
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


@dataclass(frozen=True)
class Metrics:
    """The Prometheus endpoint: the address and port it listens on; with *probe*, also
    GET /probe (daemon/prober.py)."""

    host: str  # an IPv4 or IPv6 address, normalized text
    port: int
    probe: bool = False

    @property
    def listen(self) -> str:
        """As the config writes it: 127.0.0.1:9101, [::1]:9101."""
        return host_port(self.host, self.port)


SSMPING_PORT = 4321
MAX_SSMPING_GROUPS = 4096  # as many as listeners (MAX_LISTENERS); wire/tlv.py indexes them


@dataclass(frozen=True)
class Ssmping:
    """The ssmping / RFC 6450 listener: its port, the groups replies may go to (in the
    order an RFC 6450 Init is offered them), and the top-level allow and rate_limit."""

    port: int = SSMPING_PORT
    groups: tuple[str, ...] = SSMPING_GROUPS
    allow: Optional[tuple[Union[ipaddress.IPv4Network, ipaddress.IPv6Network], ...]] = None
    rate_limit: Optional[RateLimit] = RateLimit()


@dataclass(frozen=True)
class Config:
    path: str
    listeners: tuple[Listener, ...] = (Listener(),)
    log_level: str = "info"
    status_interval: float = 5.0
    metrics: Optional[Metrics] = None  # None: no metrics endpoint
    ssmping: Optional[Ssmping] = None  # None: no ssmping / RFC 6450 listener


class Invalid(ValueError):
    """A value failed its check; the message says what is allowed.

    *at* points inside a list (an index) or a mapping (a key), so the error
    names the line of that item rather than of the key that holds it.
    """

    def __init__(self, message: str, at: Any = None) -> None:
        super().__init__(message)
        self.at = at

    def each(self) -> list[Invalid]:
        """Every problem this stands for, each with its own *at*."""
        return [self]


class Problems(Invalid):
    """Several problems in one value (items of a list, keys of a mapping): each is
    reported on its own line."""

    def __init__(self, problems: list[Invalid]) -> None:
        super().__init__("; ".join(str(problem) for problem in problems), problems[0].at)
        self.problems = problems

    def each(self) -> list[Invalid]:
        return self.problems


def _raise_any(problems: list[Invalid]) -> None:
    """Raise the problems found in a value, if any: one as itself, several as Problems."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise Problems(problems)


def _within(place: Any, problem: Invalid, prefix: str = "") -> list[Invalid]:
    """*problem*'s lines, moved inside *place* (a key or index of the value that holds
    it): each points at place, or at its own place within it, and starts with *prefix*."""
    return [Invalid(f"{prefix}{one}", place if one.at is None else
                    (place, *one.at) if isinstance(one.at, tuple) else (place, one.at))
            for one in problem.each()]


def _each_item(items: list, check: Callable[[Any], Any]) -> list:
    """check(item) of every item of a list; every bad one is a problem of its own,
    pointing at its item."""
    values, problems = [], []
    for index, item in enumerate(items):
        try:
            values.append(check(item))
        except Invalid as e:
            problems.extend(_within(index, e))
    _raise_any(problems)
    return values


class Quoted(str):
    """Text the file wrote in quotes (port: "9999"), or tagged !!str, that would be a
    number, a boolean or null without them; *plain* is that value (9999). It is a string
    like any other, so a key that takes text takes it; a key that does not says why."""

    plain: Any

    def __new__(cls, text: str, plain: Any) -> Quoted:
        quoted = super().__new__(cls, text)
        quoted.plain = plain
        return quoted


def checked(key: str, check: Callable[[Any], Any], value: Any) -> Any:
    """check(value), the value of *key*. A quoted value that fails is said to be a
    string, with how to write it: `"9999" is a string; write port: 9999`."""
    try:
        return check(value)
    except Invalid as problem:
        if not isinstance(value, Quoted):
            raise
        quoted = f'"{clip(value)}" is a string'
        try:
            check(value.plain)
        except Invalid as unquoted:
            raise Invalid(f"{quoted}; unquoted, {unquoted}", problem.at) from None
        raise Invalid(f"{quoted}; write {key}: {value}", problem.at) from None


# ----------------------------------------------------------------- value checks
# Each takes the YAML value and returns the typed value or raises Invalid with
# the text that follows "key: ". The bad value is always quoted back.


def clip(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + f"... ({len(text)} characters)"


def show(value: Any) -> str:
    """A value as an error line quotes it: YAML spelling, clipped to MAX_SHOWN."""
    return clip(spell(value))


def spell(value: Any) -> str:
    """A value in YAML spelling, whole (as check-config prints the settings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, tuple):  # allow: networks
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, RateLimit):
        return f"{{rate: {value.rate:g}, burst: {value.burst}}}"
    if isinstance(value, Metrics):
        return f'{{listen: "{value.listen}"' + (", probe: true}" if value.probe else "}")
    if isinstance(value, Ssmping):
        return f"{{port: {value.port}, groups: [{', '.join(value.groups)}]}}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # status_interval: 5, not 5.0
    if isinstance(value, Quoted):  # text that unquoted would be a number, boolean or null
        return f'"{value}"'
    if isinstance(value, str) and not value.isprintable():
        return repr(value)  # a newline, tab or escape in a value must not break the line
    return str(value)


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{show(value)} is not an integer (allowed: {low}..{high})")
    if not low <= value <= high:
        raise Invalid(f"{show(value)} is out of range {low}..{high}")
    return value


def _address(value: Any) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address, None]:
    """An address from its text (of either family), else None."""
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def check_group(value: Any) -> str:
    addr = _address(value)
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


def check_port(value: Any) -> int:
    return _integer(value, 1, 65535)


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
    if addr == _BROADCAST:
        return "the broadcast address"
    if addr.version == 6 and addr.scope_id:
        return "written with a %zone (the listener's interface is the zone)"
    return None


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
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
        addr = _address(item)
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
    _raise_any(problems)
    return tuple(str(addr) for addr in sorted(seen))


def check_reply(value: Any) -> str:
    if not isinstance(value, str) or value not in REPLY_MODES:
        raise Invalid(f"{show(value)} is not a reply mode (allowed: unicast to the sender, "
                      "group to the group, or both)")
    return value


_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1 << 20, "mib": 1 << 20,
          "mb": 1000 ** 2, "g": 1 << 30, "gib": 1 << 30, "gb": 1000 ** 3}
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
MAX_BUFFER = (1 << 31) - 1  # the kernel takes an int


def parse_size(value: Any) -> int:
    """Bytes from ``65536`` or a string such as ``"4MiB"``, ``"512 KiB"``, ``"1M"``."""
    if isinstance(value, bool):
        raise Invalid(f"{show(value)} is not a size (allowed: bytes such as 4194304, or 4MiB)")
    if isinstance(value, int):
        number = value
    else:
        match = _SIZE.match(value) if isinstance(value, str) else None
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            raise Invalid(f"{show(value)} is not a size (allowed: bytes such as 4194304, or a "
                          "number with KiB, MiB, GiB, KB, MB, GB)")
        number = int(match.group(1)) * _UNITS[unit]
    if not 1024 <= number <= MAX_BUFFER:
        raise Invalid(f"{show(value)} is out of range 1KiB..2GiB (1024..{MAX_BUFFER} bytes)")
    return number


def check_buffer(value: Any) -> Optional[int]:
    return None if value is None else parse_size(value)


def check_ttl(value: Any) -> int:
    return _integer(value, 0, 255)


def check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{show(value)} is not a boolean (allowed: true or false)")
    return value


def check_max_datagram(value: Any) -> int:
    """An integer; its range depends on the group's family (listener_problems checks it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{show(value)} is not an integer (allowed: 1..{MAX_UDP_PAYLOAD}, "
                      f"or up to {MAX_UDP6_PAYLOAD} for an IPv6 group)")
    return value


_ALLOW_ALLOWED = ("allowed: an address or CIDR such as 10.0.0.0/8, 192.0.2.7 or "
                  "2001:db8::/32")
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


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
    return tuple(_each_item(value, _source_network))


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


def _mapping(value: Any, checks: dict[str, Callable[[Any], Any]], not_one: str,
             off: Any = None) -> Optional[dict[str, Any]]:
    """The checked values of the keys a mapping sets, for the mapping keys (rate_limit,
    metrics, ssmping): None if *value* is *off* (null, or false for rate_limit); else it
    must be a mapping (*not_one* says what is allowed) of the keys of *checks* only. Every
    unknown key and every bad value is a problem of its own, naming the key and pointing
    at it."""
    if value is off:
        return None
    if not isinstance(value, dict):
        raise Invalid(f"{show(value)} is not {not_one}")
    values, problems = {}, []
    for key, item in value.items():
        if key not in checks:
            problems.append(Invalid(f"{show(key)}: unknown key (allowed: "
                                    f"{', '.join(checks)})", at=key))
            continue
        try:
            values[key] = checked(key, checks[key], item)
        except Invalid as e:
            problems.extend(_within(key, e, prefix=f"{key}: "))
    _raise_any(problems)
    return values


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 10**7:
        raise Invalid(f"{show(value)} is not a rate (allowed: 1..10000000 datagrams per second "
                      "per source)")
    return float(value)


RATE_LIMIT_CHECKS: dict[str, Callable[[Any], Any]] = {
    "rate": _rate,
    "burst": lambda value: _integer(value, 1, 10**7),
}


def check_rate_limit(value: Any) -> Optional[RateLimit]:
    checked = _mapping(value, RATE_LIMIT_CHECKS, "a rate limit (allowed: off, or a mapping "
                       "such as {rate: 1000, burst: 2000})", off=False)
    return None if checked is None else RateLimit(**checked)


def check_log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise Invalid(f"{show(value)} is not a log level (allowed: {', '.join(LOG_LEVELS)})")
    return value.lower()


def check_interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{show(value)} is not a number of seconds (allowed: 1..3600)")
    if not 1 <= value <= 3600:
        raise Invalid(f"{value} is out of range 1..3600 seconds")
    return float(value)


_LISTEN_ALLOWED = ('allowed: an IPv4 address and port such as "127.0.0.1:9101", or an IPv6 '
                   'address in brackets such as "[::1]:9101"')
_LISTEN = re.compile(r"^(?:\[(?P<v6>[^\]]*)\]|(?P<v4>[^:\[\]]*)):(?P<port>\d{1,5})$")


def check_listen(value: Any) -> tuple[str, int]:
    """(address, port) of a TCP listening socket, from "127.0.0.1:9101" or "[::1]:9101".
    Names are refused: resolving one would touch the network while checking the file."""
    if isinstance(value, list):
        raise Invalid(f"{show(value)}, not an address and port: quote it (listen: "
                      "\"[::1]:9101\"); unquoted, YAML reads [...] as a list")
    match = _LISTEN.match(value) if isinstance(value, str) else None
    if match is None:
        hint = " (an IPv6 address goes in brackets)" if isinstance(value, str) \
            and value.count(":") > 1 else ""
        raise Invalid(f"{show(value)} is not an address and port{hint} ({_LISTEN_ALLOWED})")
    text = match.group("v6") if match.group("v6") is not None else match.group("v4")
    if not text:  # ":9101": no address to listen on
        raise Invalid(f"{show(value)} has no address before the port: write "
                      f"\"127.0.0.1:{match.group('port')}\" for this host only, or "
                      f"\"0.0.0.0:{match.group('port')}\" for every IPv4 address")
    addr = _address(text)
    if addr is None or (addr.version == 6) != (match.group("v6") is not None):
        what = "an IPv4 address" if match.group("v4") is not None else "an IPv6 address"
        raise Invalid(f"{show(value)}: {show(text)} is not {what} (names are not resolved; "
                      f"{_LISTEN_ALLOWED})")
    if is_multicast(addr) or addr == _BROADCAST or (addr.version == 6 and addr.scope_id):
        why = "written with a %zone" if addr.version == 6 and addr.scope_id else \
            "not an address to listen on"
        raise Invalid(f"{show(value)}: {addr} is {why} ({_LISTEN_ALLOWED})")
    port = int(match.group("port"))
    if not 1 <= port <= 65535:
        raise Invalid(f"{show(value)}: port {port} is out of range 1..65535")
    return str(addr), port


def _listen_or_null(value: Any) -> Optional[tuple[str, int]]:
    return None if value is None else check_listen(value)


METRICS_CHECKS: dict[str, Callable[[Any], Any]] = {
    "listen": _listen_or_null,
    "probe": check_bool,
}


def check_metrics(value: Any) -> Optional[Metrics]:
    checked = _mapping(value, METRICS_CHECKS, 'a metrics mapping (allowed: {listen: '
                       '"127.0.0.1:9101"}, or null for no metrics endpoint)')
    if checked is None:
        return None
    if "listen" not in checked:
        raise Invalid('{listen: ...} is missing: write e.g. metrics: {listen: "127.0.0.1:9101"}, '
                      "or metrics: null for no endpoint")
    if checked["listen"] is None:
        return None
    return Metrics(*checked["listen"], checked.get("probe", False))


def _ssmping_groups(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(f"{show(value)} is not a list of multicast groups (e.g. "
                      f"[{', '.join(SSMPING_GROUPS)}])")
    if len(value) > MAX_SSMPING_GROUPS:
        raise Invalid(f"{len(value):,} groups: at most {MAX_SSMPING_GROUPS:,}; list the groups "
                      "clients ask for (an RFC 6450 client is offered the first one inside its "
                      "prefix), or run a second daemon on another ssmping port")
    return tuple(dict.fromkeys(_each_item(value, check_group)))


SSMPING_CHECKS: dict[str, Callable[[Any], Any]] = {
    "port": check_port,
    "groups": _ssmping_groups,
}


def check_ssmping(value: Any) -> Optional[Ssmping]:
    """`ssmping: {port: 4321, groups: [...]}`: both optional; null or absent is off."""
    checked = _mapping(value, SSMPING_CHECKS, "an ssmping mapping (allowed: {port: 4321}, "
                       "{groups: [232.43.211.234]}, {} for the defaults, or null for off)")
    return None if checked is None else Ssmping(**checked)


# key -> its check. Order is the order of the shipped file. Call them through check_key.
LISTENER_KEYS: dict[str, Callable[[Any], Any]] = {
    "group": check_group,
    "port": check_port,
    "share_port": check_bool,
    "interface": check_interface,
    "sources": check_sources,
    "reply": check_reply,
    "recv_buffer": check_buffer,
    "send_buffer": check_buffer,
    "ttl": check_ttl,
    "loopback": check_bool,
    "max_datagram": check_max_datagram,
    "allow": check_allow,
    "rate_limit": check_rate_limit,
}
DAEMON_KEYS: dict[str, Callable[[Any], Any]] = {
    "log_level": check_log_level,
    "status_interval": check_interval,
    "metrics": check_metrics,
    "ssmping": check_ssmping,
}
LISTENERS = "listeners"  # the top-level list of listener mappings
ALL_KEYS = {**LISTENER_KEYS, **DAEMON_KEYS}


def check_key(key: str, value: Any) -> Any:
    """The checked value of top-level or listener key *key*; Invalid (one or several
    problems, see Invalid.each) if it is not one."""
    return checked(key, ALL_KEYS[key], value)
MAX_LISTENERS = 4096  # 4,096 groups x ports is past any real feed; past it, use more daemons


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
