"""Prometheus metrics: a collector that reads the daemon's own counts when scraped, and the
HTTP endpoint that serves them from a thread of its own.

Nothing here runs per datagram: the echo paths keep plain integer counters on each
responder (responder.py) and a scrape reads them, with each socket's kernel drop counter
(one getsockopt per socket: net/udpstats.py). Reading an int another thread writes
is safe under the GIL; the responder list is copied first, since a reload replaces it.
The series that grow with the listeners (ListenerCollector) are written by our own
formatter, the others by prometheus_client (exposition.py: a scrape at 4,096 listeners
costs ~60 ms of CPU, not ~0.6 s).

The endpoint can never stall the echo, and idle or slow clients can never keep the scrapes
out: it serves from its own threads, at most MAX_CONNECTIONS at once. A connection has
REQUEST_TIMEOUT to send its request line and headers (at most MAX_REQUEST_BYTES), then
CONNECTION_DEADLINE in all, each read or write IO_TIMEOUT; the server thread shuts down
any connection past its deadline. When all MAX_CONNECTIONS are taken, a new connection
takes the place of the oldest one still sending its request after REQUEST_GRACE (an idle
or trickling client; a scraper sends its request at once), taken from the client address that holds
the most such connections; failing that, of the oldest one being answered from the
address that holds the most connections (two or more: a client reading its answers
slowly), or else of one being answered for longer than SLOW_ANSWER. Only when none
exists is the new one closed unanswered. Log lines a client can cause are rate-limited.
prometheus_client is imported only when metrics are on (service.py imports this module
lazily): it costs ~70 ms.
"""

from __future__ import annotations

import errno
import logging
import socket
import socketserver
import sys
import threading
import time
from typing import Any, Callable, Iterable, Optional, Sequence
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .. import __version__
from ..net.udpstats import socket_drops
from ..schema.endpoints import Metrics
from ..wire import mping as wire_mping
from .echosink import DROP_REASONS
from .exposition import Exposition, Style, label_text, label_value, number
from .mping import MpingListener
from .prober import Prober, Refused
from .ratelimit import RateLimitedLog
from .reloads import ReloadHistory
from .responder import GroupResponder

log = logging.getLogger(__name__)
peer_log = RateLimitedLog(log)  # what a client can cause: one line per reason per 10 s

IO_TIMEOUT = 5.0  # seconds a connection may send nothing (or read nothing) before it is dropped
REQUEST_TIMEOUT = 3.0  # seconds from accept to the end of the headers (a scraper needs ~1 ms)
REQUEST_GRACE = 0.5  # seconds a new connection is not yet counted as idle (its request may
#                      not have been read yet: the answers are quick, so they cycle fast)
CONNECTION_DEADLINE = 10.0  # seconds a connection may last in all (Prometheus' scrape timeout)
SLOW_ANSWER = 3.0  # seconds after which an answer still being sent may give way to a new client
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


DROPPED = ("mcast_echo_dropped_datagrams_total",
           f"Datagrams received and not echoed, by reason ({', '.join(DROP_REASONS)}).")
KERNEL_DROPS = ("mcast_echo_kernel_drops_total",
                "Datagrams the kernel dropped for the listener's socket before the daemon read "
                "them: its receive buffer was full (raise recv_buffer).")

RESIDENCE = ("mcast_echo_residence_seconds",
             "Time from the kernel's receipt of a probe to the send of its echo (T3 - T2, as "
             "written into the echo); probes that ask for the trailer only.")
LE_MARK = "\x00le\x00"  # where a bucket's bound goes in a listener's label text (no escaping)

SSMPING_UNANSWERED = ("malformed", "ignored")  # requests mping.py counts and cannot answer


class ListenerCollector(Collector):
    """The series of every listener, built from its counters at each scrape: the families
    that grow with the listeners. render() writes them itself (exposition.py: ~20 times
    cheaper than prometheus_client's Metric objects, which collect() still yields, for
    ``?name[]=`` queries). A labelled series the daemon knows of is there from the start,
    at 0 (every drop reason), as client_python advises: a counter that appears at its
    first event hides that event from `increase()`."""

    def __init__(self, responders: Callable[[], Sequence[GroupResponder]]) -> None:
        self._responders = responders
        # Each listener's label string, built once: {(group, port, interface): text}
        self._labels: dict[tuple[str, str, str], str] = {}
        # ... and with the histogram's 'le' (it sorts between interface and port): its halves
        self._le_labels: dict[tuple[str, str, str], tuple[str, str]] = {}

    def _listeners(self) -> list[tuple[GroupResponder, tuple[str, str, str]]]:
        # One list: a reload may replace it meanwhile.
        return [(r, (r.listener.group, str(r.listener.port), r.listener.interface or "route"))
                for r in list(self._responders())]

    def collect(self) -> Iterable[Metric]:
        # One family at a time: with a thousand listeners, all of them at once would hold
        # ~3 MiB more at each scrape.
        listeners = self._listeners()
        for kind, table in ((CounterMetricFamily, COUNTERS), (GaugeMetricFamily, GAUGES)):
            for name, text, read in table:
                family = kind(name, text, labels=LISTENER_LABELS)
                for responder, labels in listeners:
                    family.add_metric(labels, read(responder))
                yield family
        dropped = CounterMetricFamily(*DROPPED, labels=(*LISTENER_LABELS, "reason"))
        for responder, labels in listeners:
            for reason, count in by_reason(dict(responder.dropped)):  # dict(): one C copy
                dropped.add_metric([*labels, reason], count)
        yield dropped
        kernel = CounterMetricFamily(*KERNEL_DROPS, labels=LISTENER_LABELS)
        for responder, labels in listeners:
            count = responder.kernel_drops()
            if count is not None:
                kernel.add_metric(labels, count)
        yield kernel
        yield residence_family(listeners)

    def render(self, style: Style) -> str:
        """The families collect() yields, written as prometheus_client would write them
        in *style*: one f-string per sample."""
        known, self._labels = self._labels, {}  # keeps the labels of today's listeners only
        known_le, self._le_labels = self._le_labels, {}
        listeners, histograms = [], []
        for responder, labels in self._listeners():
            text = known.get(labels) or label_text(zip(LISTENER_LABELS, labels))
            self._labels[labels] = text
            listeners.append((responder, text))
            halves = known_le.get(labels)
            if halves is None:
                before, _, after = label_text(zip((*LISTENER_LABELS, "le"),
                                                  (*labels, LE_MARK))).partition(LE_MARK)
                halves = (before, after)
            self._le_labels[labels] = halves
            histograms.append((responder.residence, text, *halves))
        out: list[str] = []
        for kind, table in (("counter", COUNTERS), ("gauge", GAUGES)):
            for name, help_text, read in table:
                sample = style.begin(out, name, help_text, kind)
                out += [f"{sample}{{{labels}}} {number(read(responder))}\n"
                        for responder, labels in listeners]
        sample = style.begin(out, *DROPPED, "counter")
        for responder, labels in listeners:
            out += [f'{sample}{{{labels},reason="{label_value(reason)}"}} {number(count)}\n'
                    for reason, count in by_reason(dict(responder.dropped))]
        sample = style.begin(out, *KERNEL_DROPS, "counter")
        for responder, labels in listeners:
            count = responder.kernel_drops()
            if count is not None:
                out.append(f"{sample}{{{labels}}} {number(count)}\n")
        style.begin(out, *RESIDENCE, "histogram")
        bucket, total, summed = (style.sample_name(f"{RESIDENCE[0]}_{suffix}")
                                 for suffix in ("bucket", "count", "sum"))
        for histogram, labels, before, after in histograms:
            out += [f"{bucket}{{{before}{bound}{after}}} {number(count)}\n"
                    for bound, count in histogram.cumulative()]
            out.append(f"{total}{{{labels}}} {number(histogram.count)}\n"
                       f"{summed}{{{labels}}} {floatToGoString(histogram.sum_ns / 1e9)}\n")
        return "".join(out)


class DaemonCollector(Collector):
    """The daemon's own series, and the ssmping listener's: a few dozen, whatever the
    listeners. Labelled ones are there from the start, at 0 (every reason, every dialect)."""

    def __init__(self, reloads: ReloadHistory,
                 ssmping: Callable[[], Optional[MpingListener]]) -> None:
        self._reloads = reloads
        self._ssmping = ssmping

    def collect(self) -> Iterable[Metric]:
        ssmping = self._ssmping()
        if ssmping is not None:
            yield from _ssmping_families(ssmping)
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


def by_reason(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Every known drop reason with its count (0 if none yet), then any other counted."""
    known = [(reason, counts.get(reason, 0)) for reason in DROP_REASONS]
    return known + sorted((reason, count) for reason, count in counts.items()
                          if reason not in DROP_REASONS)


def _ssmping_families(listener: MpingListener) -> Iterable[Metric]:
    """The ssmping listener's counters (mping.py's counts), labelled by its port."""
    port = str(listener.settings.port)
    counts = dict(listener.counts)
    received = CounterMetricFamily("mcast_echo_ssmping_received_datagrams_total",
                                   "Datagrams received on the ssmping port.", labels=("port",))
    received.add_metric([port], counts.get("received", 0))
    yield received
    requests = CounterMetricFamily("mcast_echo_ssmping_requests_total",
                                   "Requests answered, by dialect.", labels=("port", "dialect"))
    for dialect in (wire_mping.SSMPING, wire_mping.RFC6450):
        requests.add_metric([port, dialect], counts.get(dialect, 0))
    yield requests
    replies = CounterMetricFamily("mcast_echo_ssmping_replies_total",
                                  "Replies sent, unicast or to a group.", labels=("port", "to"))
    replies.add_metric([port, "unicast"], counts.get("replies", 0))
    replies.add_metric([port, "group"], counts.get("replies to groups", 0))
    yield replies
    dropped = CounterMetricFamily(
        "mcast_echo_ssmping_dropped_datagrams_total",
        "Datagrams received on the ssmping port and not answered, by reason (those of "
        f"mcast_echo_dropped_datagrams_total, and {', '.join(SSMPING_UNANSWERED)}).",
        labels=("port", "reason"))
    for reason, count in by_reason({key[len("dropped "):]: value for key, value
                                    in counts.items() if key.startswith("dropped ")}):
        dropped.add_metric([port, reason], count)
    for reason in SSMPING_UNANSWERED:
        dropped.add_metric([port, reason], counts.get(reason, 0))
    yield dropped
    kernel = CounterMetricFamily(
        "mcast_echo_ssmping_kernel_drops_total",
        "Datagrams the kernel dropped for an ssmping socket before the daemon read them "
        "(its receive buffer was full).", labels=("port", "family"))
    for handler in list(listener.sockets):
        count = socket_drops(handler.sock)
        if count is not None:
            kernel.add_metric([port, "ipv6" if handler.ipv6 else "ipv4"], count)
    yield kernel


def residence_family(listeners: list[tuple[GroupResponder, list[str]]]) -> Metric:
    """How long each listener held the probes it echoed (residence.py): probes only."""
    family = HistogramMetricFamily(*RESIDENCE, labels=LISTENER_LABELS)
    for responder, labels in listeners:
        histogram = responder.residence
        family.add_metric(labels, histogram.cumulative(), histogram.sum_ns / 1e9)
    return family


def build_registry(responders: Callable[[], Sequence[GroupResponder]],
                   reloads: ReloadHistory,
                   ssmping: Callable[[], Optional[MpingListener]]) -> Exposition:
    """Our own collectors (not prometheus_client's global registry): the listeners' series,
    the daemon's, the process' (CPU, memory, open files) and the platform's (python_info)."""
    return Exposition(ListenerCollector(responders),
                      [DaemonCollector(reloads, ssmping), ProcessCollector(registry=None),
                       PlatformCollector(registry=None)])


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
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.rfile = _LimitedReader(self.rfile, MAX_REQUEST_BYTES)  # type: ignore[assignment]

    def parse_request(self) -> bool:
        """Read the request line's rest and the headers; then the request is being answered,
        and no longer one a new connection may take the place of."""
        parsed = super().parse_request()
        if parsed:
            self.server.answering(self.request)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        """No log line per scrape."""


class _Connection:
    """What the server knows of one open connection."""

    __slots__ = ("peer", "opened", "deadline", "answering")

    def __init__(self, peer: str, opened: float) -> None:
        self.peer = peer  # the client's address
        self.opened = opened
        self.deadline = opened + REQUEST_TIMEOUT
        self.answering = False  # False: still sending its request (or idle)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a connection still open never holds up the daemon's exit
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], app: Callable) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        # Open connections, oldest first (dicts keep insertion order).
        self._connections: dict[socket.socket, _Connection] = {}
        self._lock = threading.Lock()
        super().__init__(address, _Handler)
        self.set_app(app)

    def server_bind(self) -> None:
        # HTTPServer's would look the address up in DNS (getfqdn): no lookups here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve *request* in a thread of its own; when MAX_CONNECTIONS are open, in place
        of the one _slowest() names, or not at all if it names none."""
        evicted = None
        with self._lock:
            if len(self._connections) >= MAX_CONNECTIONS:
                evicted = self._slowest()
                if evicted is not None:
                    del self._connections[evicted]
            full = len(self._connections) >= MAX_CONNECTIONS
            if not full:
                self._connections[request] = _Connection(client_address[0], time.monotonic())
        if evicted is not None:
            _cut(evicted)  # its thread sees the end of the stream and ends
            peer_log.log("metrics-evicted", logging.INFO, "metrics: %d connections open; "
                         "closed an idle or slow one for one from %s", MAX_CONNECTIONS,
                         client_address[0])
        if full:
            peer_log.log("metrics-full", logging.WARNING, "metrics: %d connections being "
                         "answered; closed one from %s unanswered", MAX_CONNECTIONS,
                         client_address[0])
            super().shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _slowest(self) -> Optional[socket.socket]:
        """The connection a new one takes the place of, oldest first: one still sending its
        request for over REQUEST_GRACE (a scraper's request is read by then), of the client
        address that has the most of them; else one being answered,
        of the address that holds the most connections if it holds two or more; else one
        being answered for longer than SLOW_ANSWER. A client that holds many connections
        loses its own first, and one scraper's single connection is the last to go (it is
        never cut in its first SLOW_ANSWER). None if there is none of these."""
        waiting: dict[str, list[socket.socket]] = {}
        held: dict[str, list[socket.socket]] = {}
        now = time.monotonic()
        for conn, state in self._connections.items():  # oldest first
            held.setdefault(state.peer, []).append(conn)
            if not state.answering and now - state.opened > REQUEST_GRACE:
                waiting.setdefault(state.peer, []).append(conn)
        if waiting:
            return max(waiting.values(), key=len)[0]
        most = max(held.values(), key=len, default=[])
        if len(most) >= 2:
            return most[0]
        return next((conn for conn, state in self._connections.items()
                     if now - state.opened > SLOW_ANSWER), None)

    def answering(self, request: socket.socket) -> None:
        """*request* has sent its request: it now has until CONNECTION_DEADLINE."""
        with self._lock:
            state = self._connections.get(request)
            if state is not None:
                state.answering = True
                state.deadline = state.opened + CONNECTION_DEADLINE

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Between two accepts (at least every POLL_INTERVAL): end connections past their
        deadline, whatever their thread is blocked on."""
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, state in self._connections.items() if state.deadline <= now]
        for conn in late:
            _cut(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's own prints a traceback to stderr; a scraper's fault is no news.
        peer_log.log("metrics-error", logging.DEBUG, "metrics: request from %s ended: %s",
                     client_address[0], sys.exc_info()[1])


def _cut(conn: socket.socket) -> None:
    """End a connection's stream both ways; its thread then closes it."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _app(exposition: Exposition, endpoint: MetricsEndpoint) -> Callable:
    """GET /metrics (exposition.py: what prometheus_client's WSGI app would answer), GET
    /probe when the settings allow it (prober.py); every other request answered here.
    Nothing raises out of it: wsgiref would print a traceback for each."""

    def metrics_app(environ: dict, start_response: Callable) -> list[bytes]:
        headers, body = exposition.body(environ.get("HTTP_ACCEPT", ""),
                                        environ.get("HTTP_ACCEPT_ENCODING", ""),
                                        environ.get("QUERY_STRING", ""))
        start_response("200 OK", headers)
        return [body]

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("REQUEST_METHOD") != "GET":
            return _answer(start_response, "405 Method Not Allowed", "use GET /metrics\n",
                           [("Allow", "GET")])
        path = environ.get("PATH_INFO", "")
        try:
            if path == "/metrics":
                return metrics_app(environ, start_response)
            if path == "/probe":
                return _probe(endpoint, environ.get("QUERY_STRING", ""), start_response)
        except Exception as e:  # a bug of ours: a 500, one log line, and the echo goes on
            peer_log.log(f"metrics-bug{path}", logging.ERROR, "metrics: %s failed: %s: %s "
                         "(a bug; please report it)", path, type(e).__name__, e)
            return _answer(start_response, "500 Internal Server Error",
                           "answering failed; see the daemon's log\n")
        if path == "/":
            return _answer(start_response, "200 OK", "mcast-echo: metrics at /metrics\n")
        return _answer(start_response, "404 Not Found", "not found; metrics are at /metrics\n")

    return app


def _probe(endpoint: MetricsEndpoint, query: str, start_response: Callable) -> list[bytes]:
    prober = endpoint.prober
    if not endpoint.settings.probe or prober is None:
        return _answer(start_response, "404 Not Found",
                       "probing is off: set metrics: {listen: ..., probe: true}\n")
    try:
        body = prober.run(prober.request(query))
    except Refused as e:
        retry = [] if e.retry_after is None else [("Retry-After", str(e.retry_after))]
        return _answer(start_response, e.status, f"{e}\n", retry)
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

    def __init__(self, settings: Metrics, exposition: Exposition,
                 prober: Optional[Prober] = None) -> None:
        """Bind and listen (OSError, with a message naming the fix, if it cannot); serving
        starts with start(), so ``serve --detach`` binds before its fork."""
        self.settings = settings
        self.prober = prober
        try:
            self._server = _Server((settings.host, settings.port), _app(exposition, self))
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
                 exposition: Exposition,
                 prober: Optional[Prober] = None) -> Optional[MetricsEndpoint]:
    """The endpoint *settings* ask for: None (off), *running* if it listens there already,
    or a new one, bound but not started (OSError if it cannot bind; *running* untouched)."""
    if settings is None:
        return None
    if running is not None and running.address == (settings.host, settings.port):
        # The socket stays; probe may have changed: turned on, it needs a prober (the
        # running one keeps its slots and rate limit), turned off, none.
        running.prober = (running.prober or prober) if settings.probe else None
        running.settings = settings
        return running
    try:
        return MetricsEndpoint(settings, exposition, prober)
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
