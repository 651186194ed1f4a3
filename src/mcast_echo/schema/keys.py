"""The keys a config file may set, the check each runs, and Config, what they build.

A listener's keys (listener.py, policy.py) may stand at the top level, as the one
listener or the defaults of a `listeners:` list; the daemon's own keys (log_level,
status_interval, the endpoints of endpoints.py and the mesh of mesh.py) only at the top
level.
config.py reads the file and calls check_key on each value it finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from .endpoints import Metrics, Ssmping, check_metrics, check_ssmping
from .listener import (
    Listener,
    check_buffer,
    check_group,
    check_interface,
    check_max_datagram,
    check_reply,
    check_sources,
    check_ttl,
)
from .mesh import Mesh, check_mesh
from .policy import check_allow, check_rate_limit
from .values import Invalid, check_bool, check_port, checked, show

LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_LISTENERS = 4096  # 4,096 groups x ports is past any real feed; past it, use more daemons


@dataclass(frozen=True)
class Config:
    """A whole config file, checked: its listeners and the daemon's own settings."""

    path: str
    listeners: tuple[Listener, ...] = (Listener(),)
    log_level: str = "info"
    status_interval: float = 5.0
    metrics: Optional[Metrics] = None  # None: no metrics endpoint
    ssmping: Optional[Ssmping] = None  # None: no ssmping / RFC 6450 listener
    mesh: Optional[Mesh] = None  # None: no part in a mesh


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
    "mesh": check_mesh,
}
LISTENERS = "listeners"  # the top-level list of listener mappings
ALL_KEYS = {**LISTENER_KEYS, **DAEMON_KEYS}


def check_key(key: str, value: Any) -> Any:
    """The checked value of top-level or listener key *key*; Invalid (one or several
    problems, see Invalid.each) if it is not one."""
    return checked(key, ALL_KEYS[key], value)
