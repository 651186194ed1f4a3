"""The metric families: a collector that reads the daemon's own counts when scraped.

Nothing here runs per datagram: the echo paths keep plain integer counters on each
responder (responder.py) and a scrape reads them, with each socket's kernel drop counter
(one getsockopt per socket: net/udpstats.py). Reading an int another thread writes
is safe under the GIL; the responder list is copied first, since a reload replaces it.
The series that grow with the listeners (ListenerCollector) are written by our own
formatter, the others by prometheus_client (exposition.py: a scrape at 4,096 listeners
costs ~60 ms of CPU, not ~0.6 s). metrics.py serves what build_registry() returns.
prometheus_client is imported only when metrics are on (endpoints.py imports this
module lazily): it costs ~70 ms.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

from prometheus_client import PlatformCollector, ProcessCollector
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
from ..wire import mping as wire_mping
from .echosink import DROP_REASONS
from .exposition import Exposition, Style, label_text, label_value, number
from .mesh import MeshNode
from .meshcollector import MeshCollector
from .mping import MpingListener
from .reloads import ReloadHistory
from .responder import GroupResponder
from .sharedsocket import PortSockets

LISTENER_LABELS = ("group", "port", "interface")


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

STRAYS = ("mcast_echo_port_strays_total",
          "Datagrams to a port whose listeners share one socket that were to none of their "
          "groups (unicast to the port, say): dropped, never echoed.")

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
                 ssmping: Callable[[], Optional[MpingListener]],
                 ports: Optional[PortSockets] = None) -> None:
        self._reloads = reloads
        self._ssmping = ssmping
        self._ports = ports

    def collect(self) -> Iterable[Metric]:
        ssmping = self._ssmping()
        if ssmping is not None:
            yield from _ssmping_families(ssmping)
        if self._ports is not None:
            strays = CounterMetricFamily(*STRAYS, labels=("port", "family"))
            for (ipv6, port), port_socket in sorted(self._ports.sockets.copy().items()):
                strays.add_metric([str(port), "ipv6" if ipv6 else "ipv4"], port_socket.strays)
            yield strays
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
                   ssmping: Callable[[], Optional[MpingListener]],
                   mesh: Callable[[], Optional[MeshNode]],
                   ports: Optional[PortSockets] = None) -> Exposition:
    """Our own collectors (not prometheus_client's global registry): the listeners' series,
    the daemon's, the mesh's (meshcollector.py), the process' (CPU, memory, open files) and
    the platform's (python_info)."""
    return Exposition(ListenerCollector(responders),
                      [DaemonCollector(reloads, ssmping, ports), MeshCollector(mesh),
                       ProcessCollector(registry=None),
                       PlatformCollector(registry=None)])
