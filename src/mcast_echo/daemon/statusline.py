"""The STATUS line: what sd_notify shows in `systemctl status`, and the ready, reloaded
and totals log lines.

Each listener's counters; past STATUS_LISTENERS of them, the totals and the listeners
that wait (a STATUS line must stay one short datagram). Then the ssmping listener's
counts, the mesh's (how many peers it hears: "hears nobody" when deaf), the echoes held
for a probe's --spread, the datagrams to a shared port that were to none of its groups
and the failed receives of the shared sockets (sharedsocket.py) if any, and a failed
reload.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..net.udpstats import socket_drops
from .delayed import DelayedReplies
from .mesh import MeshNode
from .mping import MpingListener
from .responder import GroupResponder
from .sharedsocket import PortSockets

STATUS_LISTENERS = 8  # listeners shown one by one in STATUS; past that, totals


def status_line(responders: Sequence[GroupResponder], mping: Optional[MpingListener],
                delayed: DelayedReplies, reload_problem: Optional[str],
                mesh: Optional[MeshNode] = None, ports: Optional[PortSockets] = None) -> str:
    """The daemon's STATUS text, from its listeners, its ssmping listener and mesh (if
    on), the echoes it holds and the last reload's problem (if any)."""
    if len(responders) <= STATUS_LISTENERS:
        text = "; ".join(r.status() for r in responders) or "no listeners"
    else:
        # Pending: a reload's new listeners, joined a slice at a time after it.
        pending = sum(1 for r in responders if r.memberships.pending)
        waiting = [r for r in responders if not r.memberships.pending
                   and (not r.joined or r.memberships.waiting)]
        dropped = sum(sum(r.dropped.values()) for r in responders)
        joined = len(responders) - len(waiting) - pending
        text = f"{len(responders)} listeners, {joined} joined"
        if pending:
            text += f", {pending} joins pending"
        text += (f": received {sum(r.received for r in responders)}, "
                f"echoed {sum(r.echoed for r in responders)}, dropped {dropped}")
        # each socket once (the listeners of a port may share one)
        sockets = {r.sock for r in responders if r.sock is not None}
        kernel_drops = sum(socket_drops(sock) or 0 for sock in sockets)
        if kernel_drops:
            text += f", kernel drops {kernel_drops}"
        if waiting:
            text += "; " + "; ".join(r.status() for r in waiting[:5])
            if len(waiting) > 5:
                text += f"; and {len(waiting) - 5} more waiting"
    if ports is not None:  # the shared sockets' own counts, once there are any
        if ports.strays():
            text += f"; strays to the ports dropped {ports.strays()}"
        if ports.recv_errors():
            text += f"; port socket receive errors {ports.recv_errors()}"
    if mping is not None:
        text += f"; {mping.status()}"
        kernel_drops = sum(socket_drops(handler.sock) or 0 for handler in mping.sockets)
        if kernel_drops:
            text += f", kernel drops {kernel_drops}"
    if mesh is not None:
        text += f"; {mesh.status()}"
    spread = delayed.status()
    if spread:
        text += f"; {spread}"
    if reload_problem:
        text += f" | {reload_problem}"
    return text
