"""Reading an HTTP endpoint that may be hostile: a bounded body, a bounded time, no
redirects, no proxies, and the Prometheus text parsed by prometheus_client's parser with a
cap on the samples read.

Each fetch runs on a thread of its own and the caller waits for all of them up to one
deadline (``fetch_all``): a server that trickles its headers or body cannot hold the
command past it; a thread still stuck is abandoned (a daemon thread) and named as timed out.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, TypeVar

from prometheus_client.parser import text_string_to_metric_families

MAX_BODY = 4 * 1024 * 1024  # bytes of one response: a daemon's /metrics is a few KiB
MAX_SAMPLES = 50_000  # samples parsed from one exposition
CHUNK = 64 * 1024
T = TypeVar("T")


class FetchError(Exception):
    """What went wrong with one endpoint, in one line that names it."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    scheme: str
    host: str  # without brackets
    port: int
    target: str  # path and query

    @property
    def host_port(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_url(text: str, default_path: str = "/metrics") -> Endpoint:
    """``http://host:port/path``; a bare ``host:port`` is taken as http with *default_path*.
    Raises ValueError with what is wrong."""
    url = text if "://" in text else f"http://{text}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: only http:// and https:// URLs")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number in 1..65535") from None
    if not parts.hostname:
        raise ValueError(f"{text!r} names no host")
    if parts.username or parts.password:
        raise ValueError(f"{text!r}: no user or password in the URL")
    target = (parts.path or default_path) + (f"?{parts.query}" if parts.query else "")
    return Endpoint(url, parts.scheme, parts.hostname,
                    port or (443 if parts.scheme == "https" else 80), target)


def get(endpoint: Endpoint, deadline: float, max_body: int = MAX_BODY) -> str:
    """The body of GET *endpoint*, read until *deadline* (time.monotonic()); raises
    FetchError on a refusal, a status other than 200, a body over *max_body*, or the
    deadline. The body is decoded as UTF-8, anything else replaced."""
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        raise FetchError("timed out")
    kind = http.client.HTTPSConnection if endpoint.scheme == "https" else \
        http.client.HTTPConnection
    connection = kind(endpoint.host, endpoint.port, timeout=timeout)
    try:
        connection.request("GET", endpoint.target, headers={
            "Accept": "text/plain;version=0.0.4", "Accept-Encoding": "identity",
            "User-Agent": "mcast-echo-mesh"})
        response = connection.getresponse()
        if response.status != 200:
            raise FetchError(f"HTTP {response.status} {response.reason[:80]}")
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FetchError("timed out reading the body")
            if connection.sock is not None:
                connection.sock.settimeout(left)
            chunk = response.read1(CHUNK)  # one recv at most: the deadline holds
            if not chunk:
                break
            size += len(chunk)
            if size > max_body:
                raise FetchError(f"the body is over {max_body // 1024} KiB: not a "
                                 "daemon's metrics")
            chunks.append(chunk)
    except (OSError, http.client.HTTPException) as err:
        raise FetchError(_network_error(err)) from None
    finally:
        connection.close()
    return b"".join(chunks).decode("utf-8", "replace")


def _network_error(err: BaseException) -> str:
    if isinstance(err, TimeoutError) or "timed out" in str(err):
        return "timed out"
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text[:200]


def samples(text: str, max_samples: int = MAX_SAMPLES
            ) -> Iterator[tuple[str, Mapping[str, str], float]]:
    """(name, labels, value) of every sample in Prometheus text *text*; FetchError if it is
    not that text or holds more than *max_samples* samples."""
    count = 0
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                count += 1
                if count > max_samples:
                    raise FetchError(f"more than {max_samples} samples: not a daemon's "
                                     "metrics")
                yield sample.name, sample.labels, float(sample.value)
    except FetchError:
        raise
    except Exception as err:  # whatever the parser makes of hostile text: one line, no trace
        raise FetchError(f"not Prometheus text ({type(err).__name__}: "
                         f"{str(err)[:120]})") from None


def fetch_all(jobs: Mapping[str, Callable[[float], T]], timeout: float
              ) -> dict[str, T | FetchError]:
    """Run every job (key -> fn(deadline)) on its own thread, all at once (scrapes of
    several daemons then read their counters at nearly the same instant), and wait for
    them until *timeout* seconds from now. A job that raised FetchError, or that is not
    done by then, gets a FetchError as its result."""
    deadline = time.monotonic() + timeout
    results: dict[str, object] = {}
    lock = threading.Lock()

    def work(key: str, job: Callable[[float], T]) -> None:
        try:
            result: object = job(deadline)
        except FetchError as err:
            result = err
        with lock:
            results[key] = result

    threads = [threading.Thread(target=work, args=(key, job), daemon=True, name="fetch")
               for key, job in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 0.05)
    with lock:
        return {key: results.get(key, FetchError("timed out")) for key in jobs}  # type: ignore
