"""What the daemon serves besides its listeners, and the checks of their keys: the HTTP
endpoint (metrics: /metrics, and with probe: true, GET /probe) and the ssmping / RFC 6450
listener (ssmping:).

daemon/metrics.py and daemon/prober.py serve the first, daemon/mping.py the second.
Nothing here touches a file or the network: a listen address is never resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from ..addresses import BROADCAST, SSMPING_GROUPS, host_port, is_multicast
from .listener import check_group
from .policy import Network, RateLimit
from .values import Invalid, MappingCheck, Spelled, address, check_bool, check_port, each_item, show


@dataclass(frozen=True)
class Metrics(Spelled):
    """The Prometheus endpoint: the address and port it listens on; with *probe*, also
    GET /probe (daemon/prober.py)."""

    host: str  # an IPv4 or IPv6 address, normalized text
    port: int
    probe: bool = False

    @property
    def listen(self) -> str:
        """As the config writes it: 127.0.0.1:9101, [::1]:9101."""
        return host_port(self.host, self.port)

    def spelled(self) -> str:
        return f'{{listen: "{self.listen}"' + (", probe: true}" if self.probe else "}")


SSMPING_PORT = 4321
MAX_SSMPING_GROUPS = 4096  # as many as listeners (MAX_LISTENERS); wire/tlv.py indexes them


@dataclass(frozen=True)
class Ssmping(Spelled):
    """The ssmping / RFC 6450 listener: its port, the groups replies may go to (in the
    order an RFC 6450 Init is offered them), and the top-level allow and rate_limit."""

    port: int = SSMPING_PORT
    groups: tuple[str, ...] = SSMPING_GROUPS
    allow: Optional[tuple[Network, ...]] = None
    rate_limit: Optional[RateLimit] = RateLimit()

    def spelled(self) -> str:
        return f"{{port: {self.port}, groups: [{', '.join(self.groups)}]}}"


# ----------------------------------------------------------------- metrics:

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
    addr = address(text)
    if addr is None or (addr.version == 6) != (match.group("v6") is not None):
        what = "an IPv4 address" if match.group("v4") is not None else "an IPv6 address"
        raise Invalid(f"{show(value)}: {show(text)} is not {what} (names are not resolved; "
                      f"{_LISTEN_ALLOWED})")
    if is_multicast(addr) or addr == BROADCAST or (addr.version == 6 and addr.scope_id):
        why = "written with a %zone" if addr.version == 6 and addr.scope_id else \
            "not an address to listen on"
        raise Invalid(f"{show(value)}: {addr} is {why} ({_LISTEN_ALLOWED})")
    port = int(match.group("port"))
    if not 1 <= port <= 65535:
        raise Invalid(f"{show(value)}: port {port} is out of range 1..65535")
    return str(addr), port


def _listen_or_null(value: Any) -> Optional[tuple[str, int]]:
    return None if value is None else check_listen(value)


_NO_LISTEN = object()  # the metrics mapping left listen out


def _metrics(listen: Any = _NO_LISTEN, probe: bool = False) -> Optional[Metrics]:
    """The endpoint the checked keys of metrics: describe; listen: null is none."""
    if listen is _NO_LISTEN:
        raise Invalid('{listen: ...} is missing: write e.g. metrics: {listen: "127.0.0.1:9101"}, '
                      "or metrics: null for no endpoint")
    return None if listen is None else Metrics(*listen, probe)


check_metrics = MappingCheck(
    _metrics, {"listen": _listen_or_null, "probe": check_bool},
    'a metrics mapping (allowed: {listen: "127.0.0.1:9101"}, or null for no metrics endpoint)')


# ----------------------------------------------------------------- ssmping:


def _ssmping_groups(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(f"{show(value)} is not a list of multicast groups (e.g. "
                      f"[{', '.join(SSMPING_GROUPS)}])")
    if len(value) > MAX_SSMPING_GROUPS:
        raise Invalid(f"{len(value):,} groups: at most {MAX_SSMPING_GROUPS:,}; list the groups "
                      "clients ask for (an RFC 6450 client is offered the first one inside its "
                      "prefix), or run a second daemon on another ssmping port")
    return tuple(dict.fromkeys(each_item(value, check_group)))


# `ssmping: {port: 4321, groups: [...]}`: both optional; null or absent is off.
check_ssmping = MappingCheck(
    Ssmping, {"port": check_port, "groups": _ssmping_groups},
    "an ssmping mapping (allowed: {port: 4321}, {groups: [232.43.211.234]}, {} for the "
    "defaults, or null for off)")
