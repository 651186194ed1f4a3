"""The HTTP server under the metrics endpoint (metrics.py), and its connection policy.

Idle or slow clients can never keep the scrapes out: it serves each connection from a
thread of its own, at most MAX_CONNECTIONS at once. A connection has REQUEST_TIMEOUT to
send its request line and headers (at most MAX_REQUEST_BYTES), then CONNECTION_DEADLINE
in all, each read or write IO_TIMEOUT; the server thread shuts down any connection past
its deadline. When all MAX_CONNECTIONS are taken, a new connection takes the place of the
oldest one still sending its request after REQUEST_GRACE (an idle or trickling client; a
scraper sends its request at once), taken from the client address that holds the most
such connections; failing that, of the oldest one being answered from the address that
holds the most connections (two or more: a client reading its answers slowly), or else of
one being answered for longer than SLOW_ANSWER. Only when none exists is the new one
closed unanswered. Log lines a client can cause are rate-limited.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import sys
import threading
import time
from typing import Any, Callable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .ratelimit import RateLimitedLog

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
    server: LimitedWSGIServer

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


class LimitedWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """Serves a WSGI app, each connection from a thread of its own, under the policy above."""

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
