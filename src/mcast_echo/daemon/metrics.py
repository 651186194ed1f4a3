"""The Prometheus endpoint (`metrics:`): GET /metrics, and GET /probe when the settings
allow it, served from a thread of its own.

The endpoint can never stall the echo: its server (httpserver.py) answers from threads of
its own, with a bound on its connections; /metrics is what the collectors read from the
daemon's counts at the scrape (collectors.py, written by exposition.py), /probe a probe
run on request (prober.py). prometheus_client is imported only when metrics are on
(endpoints.py imports this module lazily): it costs ~70 ms.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Callable, Optional, Sequence

from prometheus_client import CONTENT_TYPE_LATEST

from ..schema.endpoints import Metrics
from .exposition import Exposition
from .httpserver import POLL_INTERVAL, LimitedWSGIServer
from .prober import Prober, Refused
from .ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
peer_log = RateLimitedLog(log)  # what a client can cause: one line per reason per 10 s


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
            self._server = LimitedWSGIServer((settings.host, settings.port),
                                             _app(exposition, self))
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
