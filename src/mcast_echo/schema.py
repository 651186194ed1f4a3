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

MAX_SHOWN = 60  # characters of a bad value quoted back in a message
MAX_UDP_PAYLOAD = 65507  # 65535 - 20 (IPv4 header) - 8 (UDP header)
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
    def link_scope(self) -> bool:
        """An IPv6 group of interface- or link-local scope (ff01::/16, ff02::/16 and the
        flagged forms): it only means something on one interface, so needs a named one."""
        return self.ipv6 and (int(self.group.split(":")[0] or "0", 16) & 0xF) in (1, 2)

    @property
    def identity(self) -> tuple[str, int, Optional[str]]:
        """What a socket and its membership are made of: changing it means a new socket."""
        return (self.group, self.port, self.interface)


@dataclass(frozen=True)
class Config:
    path: str
    listeners: tuple[Listener, ...] = (Listener(),)
    log_level: str = "info"
    status_interval: float = 5.0


class Invalid(ValueError):
    """A value failed its check; the message says what is allowed.

    *at* points inside a list (an index) or a mapping (a key), so the error
    names the line of that item rather than of the key that holds it.
    """

    def __init__(self, message: str, at: Any = None) -> None:
        super().__init__(message)
        self.at = at


# ----------------------------------------------------------------- value checks
# Each takes the YAML value and returns the typed value or raises Invalid with
# the text that follows "key: ". The bad value is always quoted back.


def clip(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + f"... ({len(text)} characters)"


def show(value: Any) -> str:
    """A value as an error line quotes it: YAML spelling, clipped to MAX_SHOWN."""
    return clip(_show_whole(value))


def _show_whole(value: Any) -> str:
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
    if isinstance(value, str) and not value.isprintable():
        return repr(value)  # a newline, tab or escape in a value must not break the line
    return str(value)


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{show(value)} is not an integer (allowed: {low}..{high})")
    if not low <= value <= high:
        raise Invalid(f"{show(value)} is out of range {low}..{high}")
    return value


# Groups that a protocol on the local link (or, for 224.0.1.129, PTP across it) already uses
# (IANA "IPv4 Multicast Address Space Registry", "IPv6 Multicast Address Space Registry").
# Joining one would echo that protocol's packets back at its speakers, so the config refuses
# them. Keys are addresses or networks of either family: the check looks the group up in
# every entry, so IPv6 groups will need no second table.
REFUSED_GROUPS: dict[str, str] = {  # group or network -> what it is, after "... is "
    "224.0.0.0": "the reserved base address of 224.0.0.0/4",
    "224.0.0.1": "the all-hosts group of the link (IGMP queries)",
    "224.0.0.2": "the all-routers group of the link",
    "224.0.0.4": "the DVMRP routers' group",
    "224.0.0.5": "the OSPF all-routers group (AllSPFRouters)",
    "224.0.0.6": "the OSPF designated-routers group (AllDRouters)",
    "224.0.0.9": "the RIPv2 routers' group",
    "224.0.0.10": "the EIGRP routers' group",
    "224.0.0.13": "the PIM routers' group",
    "224.0.0.18": "the VRRP group",
    "224.0.0.22": "the IGMPv3 membership reports group",
    "224.0.0.102": "the HSRPv2 and GLBP group",
    "224.0.0.107": "the PTP peer-delay group (IEEE 1588)",
    "224.0.0.251": "the mDNS group",
    "224.0.0.252": "the LLMNR group",
    "224.0.1.129": "the PTP group (IEEE 1588, default domain)",
    "ff02::1": "the all-nodes group of the link",
    "ff02::2": "the all-routers group of the link",
    "ff02::16": "the MLDv2 membership reports group",
    "ff02::fb": "the mDNS group",
    "ff02::1:2": "the DHCPv6 servers and relay agents group",
    "ff02::1:ff00:0/104": "a solicited-node group (IPv6 neighbor discovery)",
}
_REFUSED_NETWORKS = tuple((ipaddress.ip_network(net), what) for net, what in REFUSED_GROUPS.items())
PRIVATE_GROUPS = "239.0.0.0/8, e.g. 239.255.10.1"  # administratively scoped (RFC 2365)


def refused_group(group: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> Optional[str]:
    """What *group* is, if it is one the config refuses (IPv4 or IPv6); else None."""
    for network, what in _REFUSED_NETWORKS:
        if group in network:
            return what
    return None


def check_group(value: Any) -> str:
    try:
        addr = ipaddress.IPv4Address(str(value)) if isinstance(value, str) else None
    except ValueError:
        addr = None
    if addr is None:
        raise Invalid(f"{show(value)} is not an IPv4 address (allowed: 224.0.0.0 to "
                      "239.255.255.255, e.g. 224.3.29.71)")
    if not addr.is_multicast:
        raise Invalid(f"{value} is not a multicast address (allowed: 224.0.0.0/4, "
                      "e.g. 224.3.29.71; use 239.0.0.0/8 for a private group)")
    refused = refused_group(addr)
    if refused is not None:
        raise Invalid(f"{addr} is {refused}: not free for an echo responder; use an "
                      f"administratively scoped group ({PRIVATE_GROUPS})")
    return str(addr)


def check_port(value: Any) -> int:
    return _integer(value, 1, 65535)


_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def check_interface(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise Invalid(f"{show(value)} is not an interface (allowed: a name such as eth0, "
                      "an IPv4 address of this host, or null for the route to the group)")
    if value[0].isdigit() and value.count(".") == 3:
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise Invalid(f"{value} is not a valid IPv4 address") from None
    if not _IFNAME.match(value) or value in (".", ".."):
        raise Invalid(f"{value!r} is not a valid interface name (1-15 characters, "
                      "no spaces or slashes, e.g. eth0)")
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
    return _integer(value, 1, MAX_UDP_PAYLOAD)


def check_allow(value: Any) -> Optional[tuple[ipaddress.IPv4Network, ...]]:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise Invalid(f"{show(value)} is not a list of source networks (allowed: e.g. "
                      "[10.0.0.0/8, 192.0.2.7], or null for any source)")
    networks = []
    for index, item in enumerate(value):
        try:
            networks.append(ipaddress.IPv4Network(str(item), strict=False)
                            if isinstance(item, str) else None)
        except ValueError:
            networks.append(None)
        if networks[-1] is None:
            raise Invalid(f"{show(item)} is not an IPv4 network (allowed: an address or "
                          "CIDR such as 10.0.0.0/8)", at=index)
    return tuple(networks)


RATE_LIMIT_KEYS = ("rate", "burst")


def check_rate_limit(value: Any) -> Optional[RateLimit]:
    if value is False:
        return None
    if not isinstance(value, dict):
        raise Invalid(f"{show(value)} is not a rate limit (allowed: off, or a mapping "
                      "such as {rate: 1000, burst: 2000})")
    for key in value:
        if key not in RATE_LIMIT_KEYS:
            raise Invalid(f"{show(key)}: unknown key (allowed: rate, burst)", at=key)
    rate = value.get("rate", RateLimit.rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 1 <= rate <= 10**7:
        raise Invalid(f"rate: {show(rate)} is not a rate (allowed: 1..10000000 datagrams "
                      "per second per source)", at="rate")
    burst = value.get("burst", RateLimit.burst)
    try:
        burst = _integer(burst, 1, 10**7)
    except Invalid as e:
        raise Invalid(f"burst: {e}", at="burst") from None
    return RateLimit(float(rate), burst)


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


# key -> (check, which object it belongs to). Order is the order of the shipped file.
LISTENER_KEYS: dict[str, Callable[[Any], Any]] = {
    "group": check_group,
    "port": check_port,
    "share_port": check_bool,
    "interface": check_interface,
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
}
ALL_KEYS = {**LISTENER_KEYS, **DAEMON_KEYS}
