"""What the host sets against opening the listeners' sockets, and what to do about it:
the open-files limit (lifted toward the hard one, one socket per listener), a privileged
port (net.ipv4.ip_unprivileged_port_start), a port another socket holds (who holds it:
net/portowner.py). A start and a reload (service.py) both ask here.
"""

from __future__ import annotations

import errno
import logging
import resource

from ..net import portowner
from ..net.limits import unprivileged_port_start
from ..schema.listener import Listener

log = logging.getLogger(__name__)

FILES_BESIDE_SOCKETS = 64  # the wakeup pipe, the journal, the notify socket, ...


def bind_error_text(listener: Listener, error: OSError) -> str:
    """Why a listener's socket could not be bound, and for a port in use, who holds it."""
    where = listener.where
    if error.errno == errno.EACCES and listener.port < (start := unprivileged_port_start()):
        return (f"cannot bind {where}: Permission denied: port {listener.port} is privileged "
                f"(below net.ipv4.ip_unprivileged_port_start = {start}): run as root, give the "
                "daemon CAP_NET_BIND_SERVICE (the unit: AmbientCapabilities= and "
                "CapabilityBoundingSet= CAP_NET_BIND_SERVICE), lower that sysctl, or use a "
                f"port of {start} or more")
    if error.errno != errno.EADDRINUSE:
        return f"cannot bind {where}: {error.strerror or error}"
    who = portowner.holder(listener.group, listener.port) or "another socket"
    return (f"cannot bind {where}: Address already in use by {who}; a second responder on "
            f"the same group and port would double every echo: stop it (find it with "
            f"`ss -ulpn 'sport = :{listener.port}'`), or set 'share_port: true' in both "
            f"configs if sharing is intended")


def raise_open_files_limit(listeners: int) -> None:
    """One socket per listener: lift the soft RLIMIT_NOFILE toward the hard one if a
    thousand groups need it (the default soft limit is 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = listeners + FILES_BESIDE_SOCKETS
    if needed <= soft:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    if target < needed:
        log.warning("%d listeners need %d open files, but the hard limit is %d: raise "
                    "LimitNOFILE= in the unit (or ulimit -n)", listeners, needed, hard)
