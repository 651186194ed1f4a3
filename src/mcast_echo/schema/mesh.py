"""The mesh (`mesh:`): every daemon of a fleet probes one group and answers the others'
probes, so that each one's metrics hold its row and its column of the N x N matrix (#23).

Keys: group (an IPv4 group), port, interval (seconds between this host's probes),
interface (a name: the peers are labelled by their address on it), expect (how many mesh
hosts, this one included; optional). The mesh is answered under the top-level allow and
rate_limit, as every listener is (config.py puts them in). daemon/mesh.py runs it; the
wire format is wire/mesh.py's. Nothing here touches a file or the network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional

from .listener import ALL_INTERFACES, check_group, check_interface
from .policy import Network, RateLimit
from .values import Invalid, MappingCheck, Spelled, address, check_port, integer, show

MESH_PORT = 9998
MIN_INTERVAL = 0.05  # seconds: 20 probes/s per host; past it, the rate limit is what hurts
MAX_INTERVAL = 60.0  # a dead path must show within minutes (peers_heard: three intervals)
MAX_MESH_PEERS = 1024  # peers tracked (daemon/meshpeers.py); expect may not pass it


@dataclass(frozen=True)
class Mesh(Spelled):
    """A daemon's part in the mesh: the group and port it probes and is probed on, every
    *interval* seconds, from its address on *interface*; *expect*: the mesh's size, this
    host included (None: not said). *allow* and *rate_limit* are the top-level ones."""

    group: str
    interface: str
    port: int = MESH_PORT
    interval: float = 1.0
    expect: Optional[int] = None
    allow: Optional[tuple[Network, ...]] = None
    rate_limit: Optional[RateLimit] = RateLimit()

    @property
    def identity(self) -> tuple[str, int]:
        """What its group socket is bound to: a change means a new one (and the counters
        start again); another interface is joined on the same socket."""
        return (self.group, self.port)

    def spelled(self) -> str:
        text = (f"{{group: {self.group}, port: {self.port}, interval: {show(self.interval)}, "
                f"interface: {self.interface}")
        return text + (f", expect: {self.expect}}}" if self.expect is not None else "}")


def _mesh_group(value: Any) -> str:
    group = check_group(value)
    if ipaddress.ip_address(group).version != 4:
        raise Invalid(f"{group}: the mesh is IPv4 only for now (its peers are labelled "
                      "A.B.C.D); use a group of 239.0.0.0/8, e.g. 239.255.77.77")
    if group.startswith("232."):
        raise Invalid(f"{group} is a source-specific group (232.0.0.0/8): every mesh host is "
                      "a source, so use an any-source group, e.g. 239.255.77.77")
    return group


def _mesh_interface(value: Any) -> str:
    checked = check_interface(value)
    if checked is None or checked == ALL_INTERFACES or address(checked) is not None:
        raise Invalid(f"{show(value)} is not an interface name: the mesh needs one (e.g. "
                      "interface: eth0), as its peers are labelled by their address on it")
    return checked


def _interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{show(value)} is not a number of seconds (allowed: {MIN_INTERVAL:g}.."
                      f"{MAX_INTERVAL:g}; 0.2 to 1 is typical)")
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise Invalid(f"{value} is out of range {MIN_INTERVAL:g}..{MAX_INTERVAL:g} seconds "
                      "(0.2 to 1 is typical)")
    return float(value)


def _expect(value: Any) -> Optional[int]:
    if value is None:
        return None
    try:
        return integer(value, 2, MAX_MESH_PEERS + 1)
    except Invalid as e:
        raise Invalid(f"{e} (the number of mesh hosts, this one included; null for not "
                      "said)") from None


_NO_VALUE = object()


def _mesh(group: Any = _NO_VALUE, interface: Any = _NO_VALUE, port: int = MESH_PORT,
          interval: float = 1.0, expect: Optional[int] = None) -> Mesh:
    missing = [key for key, value in (("group", group), ("interface", interface))
               if value is _NO_VALUE]
    if missing:
        raise Invalid(f"{' and '.join(missing)} missing: write e.g. mesh: {{group: "
                      "239.255.77.77, interface: eth0}, or mesh: null for no mesh")
    return Mesh(group=group, interface=interface, port=port, interval=interval, expect=expect)


check_mesh = MappingCheck(
    _mesh, {"group": _mesh_group, "port": check_port, "interval": _interval,
            "interface": _mesh_interface, "expect": _expect},
    "a mesh mapping (allowed: {group: 239.255.77.77, interface: eth0, interval: 0.2, port: "
    f"{MESH_PORT}, expect: 6}}, or null for no mesh)")
