"""Prometheus metrics: a collector that reads the daemon's own counts when scraped, and the
HTTP endpoint that serves them from a thread of its own.

Nothing here runs per datagram: the echo paths keep plain integer counters on each
responder (responder.py) and a scrape reads them. Reading an int another thread writes
is safe under the GIL; the responder list is copied first, since a reload replaces it.

The endpoint can never stall the echo: it serves from its own threads, every connection
has a socket timeout, a request line and headers past MAX_REQUEST_BYTES end it, a
connection past CONNECTION_DEADLINE is shut down by the server thread, and past
MAX_CONNECTIONS at once new ones are closed unanswered. prometheus_client is imported
only when metrics are on (service.py imports this module lazily): it costs ~70 ms.
"""

from __future__ import annotations

import errno
import logging
import socket
import socketserver
import threading
import time
from typing import Any, Callable, Iterable, Optional, Sequence
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .. import __version__
from ..schema import Metrics
from .prober import Prober, Refused
from .reloads import ReloadHistory
from .responder import GroupResponder

log = logging.getLogger(__name__)

IO_TIMEOUT = 5.0  # seconds a connection may send nothing (or read nothing) before it is dropped
CONNECTION_DEADLINE = 10.0  # seconds a connection may last in all (Prometheus' scrape timeout)
MAX_REQUEST_BYTES = 8192  # request line and headers; a Prometheus scrape sends ~300
MAX_CONNECTIONS = 8  # served at once; Prometheus keeps one per target
POLL_INTERVAL = 0.1  # seconds: how often the server thread reaps late connections; a stop
#                      waits at most this long for the thread
LISTENER_LABELS = ("group", "port", "interface")


# ----------------------------------------------------------------- the collector


# Per listener: (name, help, what it reads from the responder), counters then gauges.
COUNTERS: tuple[tuple[str, str, Callable[[GroupResponder], int]], ...] = (
    ("mcast_echo_received_datagrams_total", "Datagrams received on the listener's socket.",
     lambda r: r.received),
    ("mcast_echo_received_bytes_total", "UDP payload bytes received on the listener's socket.",
     lambda r: r.received_bytes),
    ("mcast_echo_echoed_datagrams_total", "Datagrams echoed by the listener.",
     lambda r: r.echoed),
    ("mcast_echo_echoed_bytes_total", "UDP payload bytes echoed by the listener.",
     lambda r: r.echoed_bytes),
    ("mcast_echo_join_failures_total", "Join attempts that failed (each retry counts).",
     lambda r: r.memberships.join_failures),
)
GAUGES: tuple[tuple[str, str, Callable[[GroupResponder], int]], ...] = (
    ("mcast_echo_memberships", "Interfaces the listener's group is joined on.",
     lambda r: len(r.memberships.joined)),
    ("mcast_echo_listener_waiting", "1 while something the listener wants is not joined (an "
     "interface missing, a join refused), else 0.",
     lambda r: int(r.memberships.waiting is not None)),
)


class DaemonCollector(Collector):
    """The daemon's series, built from its counters at each scrape."""

    def __init__(self, responders: Callable[[], Sequence[GroupResponder]],
                 reloads: ReloadHistory) -> None:
        self._responders = responders
        self._reloads = reloads

    def collect(self) -> Iterable[Metric]:
        # One list (a reload may replace it meanwhile), and one family at a time: with a
        # thousand listeners, all of them at once would hold ~3 MiB more at each scrape.
        listeners = [(r, [r.listener.group, str(r.listener.port), r.listener.interface or "route"])
                     for r in list(self._responders())]
        for kind, table in ((CounterMetricFamily, COUNTERS), (GaugeMetricFamily, GAUGES)):
            for name, text, read in table:
                family = kind(name, text, labels=LISTENER_LABELS)
                for responder, labels in listeners:
                    family.add_metric(labels, read(responder))
                yield family
        dropped = CounterMetricFamily(
            "mcast_echo_dropped_datagrams_total",
            "Datagrams received and not echoed, by reason (source, ssm, acl, rate, size, "
            "loop, truncated, recv-error, send-error).", labels=(*LISTENER_LABELS, "reason"))
        for responder, labels in listeners:
            for reason, count in sorted(dict(responder.dropped).items()):  # dict(): one C copy
                dropped.add_metric([*labels, reason], count)
        yield dropped
        yield residence_family(listeners)
        yield from self._reload_families()
        build = GaugeMetricFamily("mcast_echo_build_info", "The version of mcast-echo running.",
                                  labels=("version",))
        build.add_metric([__version__], 1)
        yield build

    def _reload_families(self) -> Iterable[Metric]:
        reloads = self._reloads
        yield CounterMetricFamily("mcast_echo_reloads_total", "Reloads (SIGHUP) attempted.",
                                  value=reloads.attempts)
        yield CounterMetricFamily("mcast_echo_reload_failures_total",
                                  "Reloads that failed (the previous config kept serving).",
                                  value=reloads.failures)
        yield GaugeMetricFamily("mcast_echo_last_reload_success",
                                "1 if the last reload (or the start) succeeded, else 0.",
                                value=int(reloads.last_success))
        yield GaugeMetricFamily("mcast_echo_last_reload_timestamp_seconds",
                                "Unix time of the last reload attempt (or of the start).",
                                value=reloads.last_time)


def residence_family(listeners: list[tuple[GroupResponder, list[str]]]) -> Metric:
    """How long each listener held the probes it echoed (residence.py): probes only."""
    family = HistogramMetricFamily(
        "mcast_echo_residence_seconds",
        "Time from the kernel's receipt of a probe to the send of its echo (T3 - T2, as "
        "written into the echo); probes that ask for the trailer only.",
        labels=LISTENER_LABELS)
    for responder, labels in listeners:
        histogram = responder.residence
        family.add_metric(labels, histogram.cumulative(), histogram.sum_ns / 1e9)
    return family


def build_registry(responders: Callable[[], Sequence[GroupResponder]],
                   reloads: ReloadHistory) -> CollectorRegistry:
    """A registry of our own (not prometheus_client's global one): the daemon's series, the
    process' (CPU, memory, open files) and the platform's (python_info)."""
    registry = CollectorRegistry()
    registry.register(DaemonCollector(responders, reloads))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


# ----------------------------------------------------------------- the HTTP endpoint


class RequestTooLarge(Exception):
    pass


class _LimitedReader:
    """The connection's reader, refusing to read past a byte budget."""

    def __init__(self, raw: Any, budget: int) -> None:
        self._raw = raw
        self._left = budget

    def _take(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise RequestTooLarge
        return data

    def readline(self, size: int = -1) -> bytes:
        size = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        return self._take(self._raw.readline(size))

    def read(self, size: int = -1) -> bytes:
        size = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        return self._take(self._raw.read(size))

    def close(self) -> None:
        self._raw.close()


class _Handler(WSGIRequestHandler):
    timeout = IO_TIMEOUT  # StreamRequestHandler puts it on the connection's socket

    def setup(self) -> None:
        super().setup()
        self.rfile = _LimitedReader(self.rfile, MAX_REQUEST_BYTES)  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:
        """No log line per scrape."""


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a connection still open never holds up the daemon's exit
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], app: Callable) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._deadlines: dict[socket.socket, float] = {}  # open connection -> its deadline
        self._lock = threading.Lock()
        super().__init__(address, _Handler)
        self.set_app(app)

    def server_bind(self) -> None:
        # HTTPServer's would look the address up in DNS (getfqdn): no lookups here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = len(self._deadlines) >= MAX_CONNECTIONS
            if not full:
                self._deadlines[request] = time.monotonic() + CONNECTION_DEADLINE
        if full:
            log.debug("metrics: %d connections open; closing one from %s", MAX_CONNECTIONS,
                      client_address)
            super().shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._deadlines.pop(request, None)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Between two accepts (at least every POLL_INTERVAL): end connections past their
        deadline, whatever their thread is blocked on."""
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, deadline in self._deadlines.items() if deadline <= now]
        for conn in late:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's own prints a traceback to stderr; a scraper's fault is no news.
        log.debug("metrics: request from %s ended", client_address, exc_info=True)


def _app(registry: CollectorRegistry, endpoint: MetricsEndpoint) -> Callable:
    """prometheus_client's WSGI app on GET /metrics, GET /probe when the settings allow it
    (prober.py); every other request answered here."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("REQUEST_METHOD") != "GET":
            return _answer(start_response, "405 Method Not Allowed", "use GET /metrics\n",
                           [("Allow", "GET")])
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            try:
                return metrics_app(environ, start_response)
            except Exception:  # a bug of ours: a 500, and the echo goes on
                log.exception("metrics: collecting failed")
                return _answer(start_response, "500 Internal Server Error",
                               "collecting the metrics failed; see the daemon's log\n")
        if path == "/probe":
            return _probe(endpoint, environ.get("QUERY_STRING", ""), start_response)
        if path == "/":
            return _answer(start_response, "200 OK", "mcast-echo: metrics at /metrics\n")
        return _answer(start_response, "404 Not Found", "not found; metrics are at /metrics\n")

    return app


def _probe(endpoint: MetricsEndpoint, query: str, start_response: Callable) -> list[bytes]:
    if not endpoint.settings.probe or endpoint.prober is None:
        return _answer(start_response, "404 Not Found",
                       "probing is off: set metrics: {listen: ..., probe: true}\n")
    try:
        body = endpoint.prober.run(endpoint.prober.request(query))
    except Refused as e:
        return _answer(start_response, e.status, f"{e}\n")
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                              ("Content-Length", str(len(body)))])
    return [body]


def _answer(start_response: Callable, status: str, text: str,
            headers: Sequence[tuple[str, str]] = ()) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *headers])
    return [body]


class MetricsEndpoint:
    """One listening socket and the thread that serves it; owns both (close())."""

    def __init__(self, settings: Metrics, registry: CollectorRegistry,
                 prober: Optional[Prober] = None) -> None:
        """Bind and listen (OSError, with a message naming the fix, if it cannot); serving
        starts with start(), so ``serve --detach`` binds before its fork."""
        self.settings = settings
        self.prober = prober
        try:
            self._server = _Server((settings.host, settings.port), _app(registry, self))
        except OSError as e:
            raise OSError(e.errno, listen_error_text(settings, e)) from None
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.host, self.settings.port

    def fileno(self) -> int:
        return self._server.fileno()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        args=(POLL_INTERVAL,), name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics: serving http://%s/metrics%s", self.settings.listen,
                 " and /probe" if self.settings.probe else "")

    def close(self) -> None:
        """Stop serving and close the socket. Safe to call twice."""
        if self._thread is not None:
            self._server.shutdown()  # returns once serve_forever has: within POLL_INTERVAL
            self._thread.join(1)
            self._thread = None
            log.info("metrics: stopped serving on %s", self.settings.listen)
        self._server.server_close()


def endpoint_for(settings: Optional[Metrics], running: Optional[MetricsEndpoint],
                 registry: CollectorRegistry,
                 prober: Optional[Prober] = None) -> Optional[MetricsEndpoint]:
    """The endpoint *settings* ask for: None (off), *running* if it listens there already,
    or a new one, bound but not started (OSError if it cannot bind; *running* untouched)."""
    if settings is None:
        return None
    if running is not None and running.address == (settings.host, settings.port):
        running.settings = settings  # probe may have changed; the socket stays
        return running
    try:
        return MetricsEndpoint(settings, registry, prober)
    except OSError as e:
        if e.errno == errno.EADDRINUSE and running is not None \
                and running.address[1] == settings.port:
            raise OSError(e.errno, f"{e.strerror}; the endpoint on {running.settings.listen} "
                          "holds the port until the new one listens: move to another port, "
                          "or restart the daemon") from None
        raise


def listen_error_text(settings: Metrics, error: OSError) -> str:
    """Why the endpoint could not listen, and what fixes it."""
    where = f"metrics: cannot listen on {settings.listen}"
    if error.errno == errno.EADDRINUSE:
        return (f"{where}: Address already in use: another socket holds TCP port "
                f"{settings.port} (find it with `ss -tlpn 'sport = :{settings.port}'`); "
                "stop it, or set another port in metrics: listen")
    if error.errno == errno.EADDRNOTAVAIL:
        return (f"{where}: {settings.host} is not an address of this host; listen on one "
                "of its addresses, 127.0.0.1 or [::1] (local scrapes only), or 0.0.0.0")
    if error.errno == errno.EACCES:
        return (f"{where}: permission denied (a port below 1024 needs "
                "CAP_NET_BIND_SERVICE): use a port such as 9101")
    return f"{where}: {error.strerror or error}"
