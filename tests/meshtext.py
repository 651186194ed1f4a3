"""Mesh counters as a daemon's /metrics serves them (docs/mesh.md), for the tests of
`mcast-echo mesh` that need a matrix of known shape without daemons."""

from __future__ import annotations

from typing import Mapping, Optional


def exposition(address: Optional[str], sent: float, replies: Mapping[str, float],
               heard: Mapping[str, float], peers_heard: float = 0, host: str = "") -> str:
    """Prometheus text with one daemon's mesh counters (and a non-mesh series)."""
    extra = f',host="{host}"' if host else ""
    lines = ["# TYPE mcast_echo_echoes_total counter",
             'mcast_echo_echoes_total{group="224.3.29.71",port="9999"} 7',
             "# HELP mcast_echo_mesh_probes_sent_total Mesh probes this host sent.",
             "# TYPE mcast_echo_mesh_probes_sent_total counter",
             f"mcast_echo_mesh_probes_sent_total{{{extra[1:]}}} {sent}",
             "# TYPE mcast_echo_mesh_replies_total counter"]
    lines += [f'mcast_echo_mesh_replies_total{{responder="{peer}"{extra}}} {value}'
              for peer, value in replies.items()]
    lines.append("# TYPE mcast_echo_mesh_heard_total counter")
    lines += [f'mcast_echo_mesh_heard_total{{prober="{peer}"{extra}}} {value}'
              for peer, value in heard.items()]
    lines += ["# TYPE mcast_echo_mesh_peers_heard gauge",
              f"mcast_echo_mesh_peers_heard{{{extra[1:]}}} {peers_heard}"]
    if address:
        lines += ["# TYPE mcast_echo_mesh_info gauge",
                  f'mcast_echo_mesh_info{{address="{address}"{extra}}} 1']
    return "\n".join(lines) + "\n"
