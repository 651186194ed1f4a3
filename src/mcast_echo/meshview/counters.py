"""One daemon's mesh counters, as the metric names of docs/mesh.md say them, and their
increase over a window.

A daemon with `mesh:` serves (labels are the peers' addresses on the mesh interface):
``mcast_echo_mesh_probes_sent_total``, ``mcast_echo_mesh_replies_total{responder}`` (the
forward path: my multicast reached them and their unicast reached me),
``mcast_echo_mesh_heard_total{prober}`` (the reverse path: their multicast reaches me) and
the gauge ``mcast_echo_mesh_peers_heard``; its own address on the mesh interface comes from
``mcast_echo_mesh_info{address}``. A label that is not an IP address is not a peer: it is
counted as malformed and otherwise ignored (an endpoint is hostile input too).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

SENT = "mcast_echo_mesh_probes_sent_total"
REPLIES = "mcast_echo_mesh_replies_total"
HEARD = "mcast_echo_mesh_heard_total"
PEERS_HEARD = "mcast_echo_mesh_peers_heard"
INFO = "mcast_echo_mesh_info"
RESPONDER, PROBER, ADDRESS = "responder", "prober", "address"
MESH_PREFIX = "mcast_echo_mesh_"
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # an interface name, as IFNAMSIZ allows


@dataclass(frozen=True)
class HostCounts:
    """One daemon's mesh counters (at an instant, or their increase over a window).

    *source* says where they came from (a URL, a Prometheus instance); *address* is the
    daemon's own address on the mesh interface, None when it did not say; *name* its
    ``host`` label, if it has one.
    """

    source: str
    address: Optional[str]
    sent: float
    replies: Mapping[str, float] = field(default_factory=dict)  # responder -> replies
    heard: Mapping[str, float] = field(default_factory=dict)  # prober -> probes heard
    peers_heard: Optional[float] = None
    name: Optional[str] = None
    malformed: int = 0  # mesh samples whose peer label was not an address


def peer_address(text: Optional[str]) -> Optional[str]:
    """*text* as an address (compressed form, zone kept), None if it is not one."""
    if not text or len(text) > 64:
        return None
    host, _, zone = text.partition("%")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not zone:
        return str(address)
    if address.version == 6 and _ZONE.fullmatch(zone):
        return f"{address}%{zone}"
    return None


def from_samples(samples: Iterable[tuple[str, Mapping[str, str], float]], source: str,
                 fallback_address: Optional[str] = None) -> Optional[HostCounts]:
    """The mesh counters among *samples* (name, labels, value), None if there are none
    (the daemon has no `mesh:`). *fallback_address* is the daemon's address when it serves
    no ``mcast_echo_mesh_info`` (the host of its URL, when that is an address)."""
    sent: Optional[float] = None
    replies: dict[str, float] = {}
    heard: dict[str, float] = {}
    peers_heard: Optional[float] = None
    address: Optional[str] = None
    name: Optional[str] = None
    malformed = 0
    for metric, labels, value in samples:
        if not metric.startswith(MESH_PREFIX):
            continue
        if metric == SENT:
            sent = value
        elif metric == PEERS_HEARD:
            peers_heard = value
        elif metric == INFO:
            address = peer_address(labels.get(ADDRESS)) or address
        elif metric in (REPLIES, HEARD):
            peer = peer_address(labels.get(RESPONDER if metric == REPLIES else PROBER))
            if peer is None:
                malformed += 1
                continue
            table = replies if metric == REPLIES else heard
            table[peer] = table.get(peer, 0.0) + value
        else:
            continue
        name = name or labels.get("host")
    if sent is None:
        return None
    return HostCounts(source, address or fallback_address, sent, replies, heard, peers_heard,
                      name, malformed)


def counter_increase(before: float, after: float) -> float:
    """What a counter gained between two readings; a counter that went down was reset (the
    daemon restarted) and gained its whole new value, as Prometheus' increase() takes it."""
    return after - before if after >= before else after


def increase(before: HostCounts, after: HostCounts) -> HostCounts:
    """The increase of every counter from *before* to *after* (the same daemon); a peer
    first seen in *after* gained its whole value; the gauge is *after*'s."""
    def gained(old: Mapping[str, float], new: Mapping[str, float]) -> dict[str, float]:
        return {peer: counter_increase(old.get(peer, 0.0), value) for peer, value in new.items()}

    return HostCounts(after.source, after.address or before.address,
                      counter_increase(before.sent, after.sent),
                      gained(before.replies, after.replies), gained(before.heard, after.heard),
                      after.peers_heard, after.name or before.name,
                      max(before.malformed, after.malformed))
