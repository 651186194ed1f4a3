"""What `check-config` says about a valid config on this host, as it is right now.

A config names interfaces (eth0) or addresses of this host (10.0.0.2) that may come
later: the daemon waits for them and joins when they appear, so a missing one is not
an error. But it is most often a typo or the wrong host, so check-config warns, naming
what does exist. The daemon's own lookup (net.mcast.resolve_interface) decides what is
missing, so the warning and the daemon cannot disagree.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable

from .net import ifaddr
from .net.mcast import InterfaceUnavailable, resolve_interface
from .schema.keys import Config
from .schema.listener import ALL_INTERFACES, Listener

MAX_NAMED = 3  # listeners named in one warning; more are counted
MAX_ADDRESSES = 8  # addresses offered in one warning; more are counted


def interface_warnings(config: Config) -> list[str]:
    """'warning: ...' lines, one per interface or address the config names that this host
    does not have now (interface: all and the route to the group are not checked)."""
    missing: dict[str, list[Listener]] = {}  # interface -> the listeners that name it
    present: set[str] = set()
    for listener in config.listeners:
        spec = listener.interface
        if spec is None or spec == ALL_INTERFACES or spec in present:
            continue
        if spec not in missing and _exists(spec, listener.group):
            present.add(spec)
            continue
        missing.setdefault(spec, []).append(listener)
    if not missing:
        return []
    up = sorted((name for _, name in ifaddr.multicast_interfaces()), key=_natural)
    return [_warning(spec, listeners, up) for spec, listeners in missing.items()]


def _exists(spec: str, group: str) -> bool:
    try:
        resolve_interface(spec, group)
    except InterfaceUnavailable:
        return False
    except OSError:  # not ours to judge here: the daemon will say what it meets
        pass
    return True


def _warning(spec: str, listeners: list[Listener], up: list[str]) -> str:
    where = _listed([listener.where for listener in listeners], MAX_NAMED)
    if not _is_address(spec):
        here = (f"up and multicast-capable here: {', '.join(up)}" if up else
                "no interface here is up and multicast-capable, lo aside")
        return (f"warning: {where}: interface {spec} does not exist on this host now; the "
                f"daemon would wait for it and join when it appears ({here})")
    version = ipaddress.ip_address(spec).version
    held = _listed([f"{address} on {name}" for name, address in _addresses(up, version)],
                   MAX_ADDRESSES)
    here = (f"IPv{version} addresses of the up multicast interfaces here: {held}" if held else
            f"no up multicast interface here has an IPv{version} address")
    return (f"warning: {where}: interface {spec} is not an address of this host now; the daemon "
            f"would wait for an interface to have it and join then ({here})")


def _addresses(names: list[str], version: int) -> list[tuple[str, str]]:
    """(interface, address) of the given family on the interfaces *names*, in their order."""
    by_index = {index: name for index, name in ifaddr.multicast_interfaces() if name in names}
    found = ifaddr.ipv4_addresses() if version == 4 else ifaddr.ipv6_addresses()
    pairs = [(by_index[index], address) for index, address in found if index in by_index]
    order = {name: number for number, name in enumerate(names)}
    return sorted(pairs, key=lambda pair: order[pair[0]])


def _natural(name: str) -> list:
    """eth2 before eth10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _listed(items: Iterable[str], most: int) -> str:
    items = list(items)
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
