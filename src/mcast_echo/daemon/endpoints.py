"""The endpoints a config turns on beside the echo listeners (schema/endpoints.py,
schema/mesh.py): the ssmping / RFC 6450 listener (mping.py), the mesh (mesh.py) and the
Prometheus endpoint (metrics.py).

A config gets the running one if it stays where it is (the ssmping listener on the same
port, reconfigured; the mesh on the same group and port, reconfigured; the
metrics endpoint on the same address), else a new one, bound
(OSError if it cannot be: the running one untouched) and served once switched to. Once
the loop serves (serve()), a new metrics endpoint starts before the old one stops.
prometheus_client is imported when metrics are first turned on: it costs ~70 ms.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..net.poller import Poller
from ..schema.endpoints import Metrics, Ssmping
from ..schema.listener import Listener
from ..schema.mesh import Mesh
from .mesh import MeshNode
from .mping import MpingListener
from .prober import Prober
from .ratelimit import RateLimitedLog
from .reloads import ReloadHistory
from .responder import GroupResponder
from .sendguard import SendGuard
from .sharedsocket import PortSockets

if TYPE_CHECKING:  # imported when metrics are on (metrics_for): prometheus_client takes ~70 ms
    from .exposition import Exposition
    from .metrics import MetricsEndpoint


class Endpoints:
    """The ssmping listener, the mesh and the metrics endpoint, each None while off; owns
    them (close())."""

    def __init__(self, drop_log: RateLimitedLog, guard: SendGuard,
                 responders: Callable[[], Sequence[GroupResponder]], reloads: ReloadHistory,
                 listeners: Callable[[], Sequence[Listener]],
                 ports: Optional[PortSockets] = None) -> None:
        """*responders*, *reloads* and *ports* (the shared sockets) are what /metrics reads;
        *listeners*, what /probe may probe (the running config's, read at each call)."""
        self.mping: Optional[MpingListener] = None  # the ssmping / RFC 6450 listener, if on
        self.mesh: Optional[MeshNode] = None  # this daemon's part in a mesh, if on
        self.metrics: Optional[MetricsEndpoint] = None  # the Prometheus endpoint, if on
        self._drop_log = drop_log
        self._guard = guard
        self._responders = responders
        self._reloads = reloads
        self._listeners = listeners
        self._ports = ports
        self._metrics_registry: Optional[Exposition] = None
        self._poller: Optional[Poller] = None  # the loop's, once it serves

    def serve(self, poller: Poller) -> None:
        """The loop runs: register the ssmping sockets with its *poller*, start the
        metrics endpoint; from now on, what a switch brings in is served at once."""
        self._poller = poller
        self._register_mping(self.mping)
        if self.mesh is not None:
            self.mesh.serve(poller)
        if self.metrics is not None:
            self.metrics.start()

    def mping_for(self, settings: Optional[Ssmping]) -> Optional[MpingListener]:
        """The ssmping listener *settings* ask for: the running one (reconfigured) on the
        same port, else a new one, bound (OSError if it cannot bind)."""
        if settings is None:
            return None
        if self.mping is not None and self.mping.settings.port == settings.port:
            self.mping.reconfigure(settings)
            return self.mping
        listener = MpingListener(settings, self._drop_log, self._guard)
        listener.open()
        return listener

    def _register_mping(self, listener: Optional[MpingListener]) -> None:
        if listener is not None and self._poller is not None:
            for handler in listener.sockets:
                self._poller.register(handler.fileno(), handler)

    def switch_mping(self, listener: Optional[MpingListener]) -> None:
        """Serve from *listener* (None: off), closing the one it replaces."""
        if listener is self.mping:
            return
        self._register_mping(listener)
        self._close_mping()
        self.mping = listener

    def _close_mping(self) -> None:
        if self.mping is None:
            return
        for handler in self.mping.sockets:
            if self._poller is not None:
                self._poller.unregister(handler.fileno())
        self.mping.close()
        self.mping = None

    def mesh_for(self, settings: Optional[Mesh]) -> Optional[MeshNode]:
        """The mesh *settings* ask for: the running one (reconfigured) on the same group
        and port, else a new one, its group socket bound (OSError if it cannot
        be)."""
        if settings is None:
            return None
        if self.mesh is not None and self.mesh.settings.identity == settings.identity:
            self.mesh.reconfigure(settings)
            return self.mesh
        return MeshNode(settings, self._drop_log, self._guard)

    def switch_mesh(self, mesh: Optional[MeshNode]) -> None:
        """Serve from *mesh* (None: off), closing (leaving) the one it replaces."""
        if mesh is self.mesh:
            return
        if self.mesh is not None:
            self.mesh.close()
        self.mesh = mesh
        if mesh is not None and self._poller is not None:
            mesh.serve(self._poller)

    def tick_mesh(self, now: float) -> tuple[float, bool]:
        """The mesh's timer (mesh.py's tick): when it is due next (never, without a mesh),
        and whether how it hears changed."""
        mesh = self.mesh
        if mesh is None:
            return float("inf"), False
        changed = mesh.tick(now)
        return mesh.next_due, changed

    def metrics_for(self, settings: Optional[Metrics]) -> Optional[MetricsEndpoint]:
        """The endpoint *settings* ask for: the running one if its address is unchanged,
        else a new one, bound but not serving yet (OSError if it cannot bind)."""
        if settings is None:
            return None
        try:
            from . import collectors, metrics
        except ImportError as e:  # a start fails with exit 69, a reload is refused
            raise OSError(errno.ENOENT, f"metrics: cannot load prometheus_client ({e}): install "
                          "python3-prometheus-client, or pip install prometheus_client") from None
        if self._metrics_registry is None:
            self._metrics_registry = collectors.build_registry(self._responders, self._reloads,
                                                               lambda: self.mping,
                                                               lambda: self.mesh, self._ports)
        prober = Prober(self._listeners) if settings.probe else None
        return metrics.endpoint_for(settings, self.metrics, self._metrics_registry, prober)

    def switch_metrics(self, endpoint: Optional[MetricsEndpoint]) -> None:
        """Serve from *endpoint* (None: off): the new one starts before the old one stops."""
        if endpoint is not None and self._poller is not None:
            endpoint.start()
        if self.metrics is not None and self.metrics is not endpoint:
            self.metrics.close()
        self.metrics = endpoint

    def fds(self) -> list[int]:
        """Their descriptors: the metrics endpoint's, the ssmping sockets', the mesh's."""
        fds = [] if self.metrics is None else [self.metrics.fileno()]
        if self.mping is not None:
            fds.extend(handler.fileno() for handler in self.mping.sockets)
        if self.mesh is not None:
            fds.extend(self.mesh.fds())
        return fds

    def close(self) -> None:
        """Close them all (and leave the loop's poller). Safe to call twice."""
        self._close_mping()
        self.switch_mesh(None)
        self.switch_metrics(None)
        self._poller = None
