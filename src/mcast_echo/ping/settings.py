"""What one `mcast-echo ping` run is asked to do, and the errors that stop it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..addresses import host_port, is_link_scope_group, is_ssm_group

# --protocol: mcast-echo's own probes to a group, or a multicast ping dialect to one HOST
MCAST_ECHO, SSMPING, RFC6450 = "mcast-echo", "ssmping", "rfc6450"
PROTOCOLS = (MCAST_ECHO, SSMPING, RFC6450)


class PingError(Exception):
    """A network, config or output problem; the message says what to do. Exit status 2."""


class UsageError(PingError):
    """Options that contradict each other or the group. Exit status 64, as argparse's."""


@dataclass(frozen=True)
class Settings:
    group: str
    port: int
    interface: Optional[str]  # a name, an address, or None: the route to the group
    source: Optional[str]  # -S: the address probes are sent from (SSM)
    count: Optional[int]  # None: until Ctrl-C
    interval: float
    size: int
    ttl: int  # IP_MULTICAST_TTL or IPV6_MULTICAST_HOPS
    loopback: bool
    wait: float
    deadline: Optional[float]  # -w: seconds after which the run ends, whatever the count
    expect: int
    quiet: bool
    json: bool
    numeric: bool  # -n: no reverse lookups
    timestamps: bool  # -D: each reply line starts with the receive time
    config: Optional[str]  # the file defaults came from, if any
    textfile: Optional[str] = None  # --prometheus-textfile: where the results go (textfile.py)
    protocol: str = MCAST_ECHO  # --protocol: mcast-echo probes a group; the others, a HOST
    host: Optional[str] = None  # ssmping / rfc6450: the responder's address
    host_name: Optional[str] = None  # ... and its name, when HOST was given as one
    ttl_from: Optional[str] = None  # where the TTL came from if not -t: "FILE's `ttl:`", ...
    spread: int = 0  # --spread: responders delay each echo by 0..spread ms
    # group (ssmping / rfc6450): where the multicast replies come; "" for rfc6450 until the
    # responder's Server Response names it

    @property
    def spread_s(self) -> float:
        """The longest delay --spread lets a responder add, in seconds."""
        return self.spread / 1000

    @property
    def ipv6(self) -> bool:
        return ":" in (self.host or self.group)

    @property
    def ssm(self) -> bool:
        return bool(self.group) and is_ssm_group(self.group)

    @property
    def link_scope(self) -> bool:
        return bool(self.group) and is_link_scope_group(self.group)

    @property
    def target(self) -> str:
        """What is pinged, as GROUP:PORT (or HOST:PORT), IPv6 in brackets."""
        return host_port(self.host or self.group, self.port)

    def for_json(self) -> dict:
        """The settings a JSON document repeats: what was probed, how (not how it was shown)."""
        return {"group": self.group, "port": self.port, "interface": self.interface,
                "source": self.source, "count": self.count, "interval": self.interval,
                "size": self.size, "ttl": self.ttl, "loopback": self.loopback,
                "wait": self.wait, "deadline": self.deadline, "expect": self.expect,
                "config": self.config, "protocol": self.protocol, "host": self.host,
                "spread": self.spread}
