"""The mesh's metric families (#23), read from the mesh (mesh.py, meshpeers.py) at each
scrape. The names are fixed by the issue; mcast-echo mesh, the Prometheus rules and the
dashboard read them (docs/mesh.md):

- mcast_echo_mesh_probes_sent_total: probes this host sent;
- mcast_echo_mesh_replies_total{responder}: replies from each responder (forward path);
- mcast_echo_mesh_heard_total{prober}: probes heard from each prober (reverse path);
- mcast_echo_mesh_peers_heard: probers heard in the last three intervals;

and beside them mcast_echo_mesh_info{address, group, port, interface} (1: who this host
is in the mesh), mcast_echo_mesh_interval_seconds, mcast_echo_mesh_expected_hosts (with
expect) and mcast_echo_mesh_dropped_datagrams_total{reason}. Every peer known has both
its replies and its heard series, at 0 until counted, and keeps them (meshpeers.py).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .mesh import DROP_REASONS, MeshNode


class MeshCollector(Collector):
    """The mesh's series, none while the config has no mesh."""

    def __init__(self, mesh: Callable[[], Optional[MeshNode]]) -> None:
        self._mesh = mesh

    def collect(self) -> Iterable[Metric]:
        mesh = self._mesh()
        if mesh is None:
            return
        settings = mesh.settings
        peers = list(mesh.peers.peers.values())  # a copy: the loop adds to it meanwhile
        info = GaugeMetricFamily("mcast_echo_mesh_info", "1: this host's address on the mesh "
                                 "interface (empty while it waits for it), the group, port "
                                 "and interface.",
                                 labels=("address", "group", "port", "interface"))
        info.add_metric([mesh.address or "", settings.group, str(settings.port),
                         settings.interface], 1)
        yield info
        yield GaugeMetricFamily("mcast_echo_mesh_interval_seconds",
                                "Seconds between two of this host's mesh probes.",
                                value=settings.interval)
        if settings.expect is not None:
            yield GaugeMetricFamily("mcast_echo_mesh_expected_hosts",
                                    "Mesh hosts the config expects, this one included.",
                                    value=settings.expect)
        yield CounterMetricFamily("mcast_echo_mesh_probes_sent_total",
                                  "Mesh probes this host sent to the group.", value=mesh.sent)
        replies = CounterMetricFamily("mcast_echo_mesh_replies_total",
                                      "Replies to this host's mesh probes, by responder (the "
                                      "forward path: this host's multicast reached it, its "
                                      "unicast reached this host).", labels=("responder",))
        heard = CounterMetricFamily("mcast_echo_mesh_heard_total",
                                    "Mesh probes this host heard, by prober (the reverse path: "
                                    "its multicast reaches this host).", labels=("prober",))
        for peer in peers:
            replies.add_metric([peer.address], peer.replies)
            heard.add_metric([peer.address], peer.heard)
        yield replies
        yield heard
        yield GaugeMetricFamily("mcast_echo_mesh_peers_heard",
                                "Distinct probers heard in the last three intervals (0: this "
                                "host hears nobody).", value=mesh.peers_heard(time.monotonic()))
        counts = dict(mesh.counts)
        dropped = CounterMetricFamily("mcast_echo_mesh_dropped_datagrams_total",
                                      "Mesh datagrams received and not counted, by reason "
                                      f"({', '.join(DROP_REASONS)}).", labels=("reason",))
        for reason in DROP_REASONS:
            dropped.add_metric([reason], counts.get(f"dropped {reason}", 0))
        yield dropped
