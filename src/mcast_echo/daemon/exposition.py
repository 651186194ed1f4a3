"""The /metrics body, cheap at thousands of listeners (#18.8).

prometheus_client builds a Metric and a Sample object per series and formats each one with
several calls: at 4,096 listeners (~74,000 series, ~7 MB) that took ~0.9 s of the metrics
thread's CPU per scrape, most of it holding the GIL the echo loop needs. So the collector
whose series grow with the listeners renders itself (its ``render(style)``: one f-string per
sample, each listener's label string built once), and prometheus_client's own encoders
write the rest (a few dozen series). Both are written in the format and escaping that the
request negotiated (choose_encoder: Prometheus text 0.0.4, or OpenMetrics), by
prometheus_client's rules; tests/test_metrics.py checks the two renderings byte for byte.
The same collector still yields its Metric objects, for ``?name[]=`` queries.

Scrapes back to back (several Prometheus servers, or a client in a loop) would still keep
the metrics thread busy, and the GIL with it: a body is served again, unchanged, while it
is younger than REUSE_FACTOR times the CPU its rendering took (at most MAX_REUSE_AGE), so
rendering takes at most ~1/REUSE_FACTOR of the time however often the endpoint is asked.
A small config renders in ~0.2 ms and is never served stale by more than ~2 ms.
"""

from __future__ import annotations

import functools
import gzip
import threading
import time
from typing import Callable, Iterable, Protocol
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

OPENMETRICS = "application/openmetrics-text"
# Name escaping came with prometheus_client 0.21 (UTF-8 names); Debian 12's 0.16, which the
# .deb depends on, negotiates no escaping and writes every name as it is.
_ESCAPING_TAG = getattr(openmetrics, "ESCAPING_HEADER_TAG", "escaping")
_UNDERSCORES = getattr(openmetrics, "UNDERSCORES", "underscores")
_escape_name = getattr(openmetrics, "escape_metric_name", lambda name, escaping: name)
REUSE_FACTOR = 10  # a body is served again while younger than this many times its cost
MAX_REUSE_AGE = 1.0  # seconds: never older than this (Prometheus scrapes every 15 s or so)


class Style:
    """How the negotiated format writes a family's header and its samples' names. Label
    names are written as they are: ours (group, port, interface, reason) have no '_' or
    '.', so every escaping leaves them alone."""

    __slots__ = ("openmetrics", "escaping")

    def __init__(self, content_type: str) -> None:
        """*content_type*: what choose_encoder answered for the request's Accept header."""
        params = dict(part.strip().partition("=")[::2] for part in content_type.split(";")[1:])
        self.openmetrics = content_type.startswith(OPENMETRICS)
        self.escaping = params.get(_ESCAPING_TAG, _UNDERSCORES)

    def begin(self, out: list[str], name: str, documentation: str, kind: str) -> str:
        """Append the HELP and TYPE lines of family *name* (a counter's with its _total,
        as CounterMetricFamily takes it) to *out*; the name its samples carry."""
        base = name.removesuffix("_total") if kind == "counter" else name
        sample = _escape_name(f"{base}_total" if kind == "counter" else base,
                                                self.escaping)
        if self.openmetrics:
            family = _escape_name(base, self.escaping)
            documentation = label_value(documentation)
        else:  # the text format names a counter with its _total, and leaves '"' in HELP
            family = sample
            documentation = documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {family} {documentation}\n# TYPE {family} {kind}\n")
        return sample


    def sample_name(self, name: str) -> str:
        """A sample's name (e.g. a histogram's NAME_bucket) in the negotiated escaping."""
        return _escape_name(name, self.escaping)


@functools.lru_cache(maxsize=256)
def label_value(text: str) -> str:
    """*text* escaped as a label value (or OpenMetrics HELP) is: backslash, newline, quote."""
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_text(labels: Iterable[tuple[str, str]]) -> str:
    """The inside of a sample's braces, as prometheus_client writes it: sorted by name."""
    return ",".join(f'{name}="{label_value(value)}"' for name, value in sorted(labels))


def number(value: int) -> str:
    """A count as prometheus_client writes it (floatToGoString), without its cost when
    it is an int below 10^6 (Go writes larger ones with an exponent)."""
    if value.__class__ is int and 0 <= value < 1_000_000:
        return f"{value}.0"
    return floatToGoString(value)


class SelfRendering(Protocol):
    def collect(self) -> Iterable[Metric]: ...

    def render(self, style: Style) -> str: ...


class Exposition:
    """The collectors /metrics serves: *large* renders itself, prometheus_client encodes
    *others*. ``registry`` holds them all (``?name[]=`` queries, and anything that wants
    prometheus_client's own rendering)."""

    def __init__(self, large: SelfRendering, others: Iterable[object]) -> None:
        self.large = large
        self._others = CollectorRegistry(auto_describe=False)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(large)  # type: ignore[arg-type]
        for collector in others:
            self._others.register(collector)  # type: ignore[arg-type]
            self.registry.register(collector)  # type: ignore[arg-type]
        # The last body of each kind: {(content type, gzipped): (reusable until, headers, body)}
        self._recent: dict[tuple[str, bool], tuple[float, list[tuple[str, str]], bytes]] = {}
        self._lock = threading.Lock()

    def body(self, accept: str, encoding: str, query: str) -> tuple[list[tuple[str, str]], bytes]:
        """The headers and body for a GET with these Accept and Accept-Encoding headers and
        query string, as prometheus_client's make_wsgi_app would answer it (the same body
        again while it is young: see the module's docstring)."""
        encoder: Callable[[CollectorRegistry], bytes]
        encoder, content_type = choose_encoder(accept)
        zipped = gzip_accepted(encoding)
        names = parse_qs(query).get("name[]")
        if names:  # as make_wsgi_app answers it (a small body), never kept
            return self._finish(content_type, zipped,
                                encoder(self.registry.restricted_registry(names)))
        with self._lock:
            until, headers, output = self._recent.get((content_type, zipped), (0.0, [], b""))
        if time.monotonic() < until:
            return headers, output
        cost = time.thread_time()
        # The large families first: an OpenMetrics body ends with the others' # EOF.
        output = self.large.render(Style(content_type)).encode() + encoder(self._others)
        headers, output = self._finish(content_type, zipped, output)
        age = min(MAX_REUSE_AGE, REUSE_FACTOR * (time.thread_time() - cost))
        with self._lock:
            self._recent[content_type, zipped] = (time.monotonic() + age, headers, output)
        return headers, output

    @staticmethod
    def _finish(content_type: str, zipped: bool,
                output: bytes) -> tuple[list[tuple[str, str]], bytes]:
        headers = [("Content-Type", content_type)]
        if zipped:
            # The fastest level, as Prometheus' own Go client compresses: ~20 ms and 420 KB
            # for a 7 MB body where make_wsgi_app's level 9 takes ~180 ms for 340 KB.
            output = gzip.compress(output, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        return headers, output
