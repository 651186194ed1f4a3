"""What `mcast-echo mesh` prints: the matrix as text, or one JSON document.

Pure functions of a matrix.MeshView. Host names come from the daemons' ``host`` label
(hostile input like the rest): shown through ping's display.shown, so nothing a peer wrote
reaches the terminal unescaped; the JSON keeps the raw text.
"""

from __future__ import annotations

from typing import Any, Optional

from ..ping.display import plural, shown
from .counters import HostCounts
from .matrix import FORWARD, REVERSE, Finding, MeshView

LEGEND = "loss % per ordered pair, forward/reverse (row P probes, column R answers)"


def _percent_loss(ratio: Optional[float]) -> str:
    return "?" if ratio is None else f"{round(100 * (1 - ratio))}"


def host_label(host: HostCounts) -> str:
    return f"{host.address} ({shown(host.name)})" if host.name else str(host.address)


def matrix_lines(view: MeshView) -> list[str]:
    """The N×N table: one row per prober, one column per responder, numbered."""
    hosts = view.hosts
    labels = [f"{i + 1:>2} {host_label(h)}" for i, h in enumerate(hosts)]
    width = max([len(label) for label in labels] + [10])
    cells = {}
    for (prober, responder), path in view.paths.items():
        cells[(prober, responder)] = (f"{_percent_loss(path.ratio(FORWARD))}/"
                                      f"{_percent_loss(path.ratio(REVERSE))}")
    column = max([len(c) for c in cells.values()] + [len(str(len(hosts))), 3]) + 2
    header = " " * width + "".join(f"{i + 1:>{column}}" for i in range(len(hosts)))
    lines = [header]
    for label, prober in zip(labels, hosts):
        row = "".join(f"{cells.get((prober.address, r.address), '-'):>{column}}"
                      for r in hosts)
        lines.append(f"{label:<{width}}{row}")
    return lines


def _name(view: MeshView, address: str) -> str:
    for i, host in enumerate(view.hosts):
        if host.address == address:
            return f"{i + 1} {host_label(host)}"
    return address


def _finding_line(view: MeshView, finding: Finding, kind: str) -> str:
    path = finding.path
    what = ("no reply came back" if finding.direction == FORWARD else "it heard no probe") \
        if kind == "dead" else f"{round(100 * (1 - finding.ratio))}% loss"
    return (f"{kind}: {_name(view, path.prober)} -> {_name(view, path.responder)}, "
            f"{finding.direction}: {what} ({path.sent:.0f} probes sent)")


def findings_lines(view: MeshView) -> list[str]:
    """Deaf and silent hosts, partitions, dead and lossy paths: one line each."""
    lines = []
    for address in view.silent:
        lines.append(f"silent: {_name(view, address)} sent no probes in the window "
                     "(its mesh stopped probing?)")
    for address in view.deaf:
        others = [h for h in view.hosts if h.address != address and h.sent > 0]
        reach = sum(1 for h in others if view.path(address, h.address).heard > 0)
        lines.append(f"deaf: {_name(view, address)} hears nobody: no probe from the "
                     f"{plural(len(others), 'other prober')} reached it "
                     f"(its own probes still reach {reach} of {len(others)}): its "
                     "switch port or interface gets no multicast")
    if view.partitions:
        blocks = " | ".join("[" + " ".join(str(view.addresses.index(a) + 1) for a in group)
                            + "]" for group in view.partitions)
        lines.append(f"partition: {len(view.partitions)} groups whose multicast does not "
                     f"cross: {blocks}")
    lines.extend(_finding_line(view, f, "dead") for f in view.dead)
    lines.extend(_finding_line(view, f, "loss") for f in view.lossy)
    return lines


def tail_line(view: MeshView, seconds: float) -> str:
    count = len(view.hosts)
    pairs = len(view.paths)
    return (f"{plural(count, 'host')}, {plural(pairs, 'ordered pair')} over {seconds:.1f} s: "
            f"{view.healthy_pairs()} healthy (forward and reverse >= "
            f"{100 * view.healthy_ratio:g}%)")


def failed_lines(failed: dict[str, str]) -> list[str]:
    return [f"unreachable: {shown(source)}: {shown(why)}" for source, why in failed.items()]


def text(view: MeshView, seconds: float, failed: dict[str, str]) -> list[str]:
    lines = [f"MESH {plural(len(view.hosts), 'host')}, {seconds:.1f} s window: {LEGEND}"]
    if view.hosts:
        lines.extend(matrix_lines(view))
    lines.extend(findings_lines(view))
    lines.extend(failed_lines(failed))
    lines.append(tail_line(view, seconds))
    return lines


def _ratio(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)


def json_document(view: MeshView, seconds: float, failed: dict[str, str], status: int,
                  settings: dict[str, Any]) -> dict[str, Any]:
    def finding(f: Finding) -> dict[str, Any]:
        return {"prober": f.path.prober, "responder": f.path.responder,
                "direction": f.direction, "ratio": _ratio(f.ratio)}

    return {
        "settings": settings,
        "ok": status == 0,
        "exit_status": status,
        "window_s": round(seconds, 3),
        "healthy_ratio": view.healthy_ratio,
        "hosts": [{"address": h.address, "name": h.name, "source": h.source,
                   "probes_sent": h.sent, "peers_heard": h.peers_heard,
                   "malformed_samples": h.malformed} for h in view.hosts],
        "pairs": [{"prober": p.prober, "responder": p.responder, "probes_sent": p.sent,
                   "replies": p.replies, "heard": p.heard,
                   "forward": _ratio(p.ratio(FORWARD)), "reverse": _ratio(p.ratio(REVERSE))}
                  for p in view.paths.values()],
        "healthy_pairs": view.healthy_pairs(),
        "silent": view.silent,
        "deaf": view.deaf,
        "partitions": view.partitions,
        "dead_paths": [finding(f) for f in view.dead],
        "lossy_paths": [finding(f) for f in view.lossy],
        "unreachable": [{"source": s, "error": why} for s, why in failed.items()],
    }
