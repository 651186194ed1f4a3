"""`mcast-echo ping --prometheus-textfile PATH`: one run's results for node_exporter.

node_exporter's textfile collector reads every ``*.prom`` file of its directory at each
scrape, so the file is replaced whole: written to a temporary file in the same directory
(a name without ``.prom``, which the collector skips), fsynced, given mode 0644, renamed
over PATH. A reader sees the old file or the new one, never a part. Only a regular file
is replaced: PATH as a symbolic link, FIFO, device or directory is refused (exit 2) and
left untouched (``replace``).

The text is prometheus_client's own exposition (``generate_latest`` on a registry of
this run's), so HELP/TYPE lines and the escaping of label values are the library's.
This host's own responder (ping/local.py) gets no series and never counts toward
success or the responders: ``mcast_echo_probe_local_responders`` says it answered.
Every value a responder chose is hostile: its name (from the identity trailer) is made
printable and cut to MAX_NAME characters, and at most MAX_RESPONDERS responders get
series, so a group member answering from thousands of addresses cannot blow up the file
or Prometheus' series count.

Each run's values stand alone, not counters: the RTT summary's ``_sum`` and ``_count``
are this run's, so aggregate over runs with ``sum_over_time``, never ``rate``.
prometheus_client is imported only when the option is given.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import Iterator, Optional

from ..addresses import host_port
from .display import shown
from .responderstats import ResponderStats
from .settings import PingError, Settings
from .tally import ResponderTable, RunCounts

MAX_RESPONDERS = 256  # responders given series per run; the rest are counted (omitted)
MAX_NAME = 64  # characters of a responder's name kept in the `name` label
FILE_MODE = 0o644  # node_exporter runs as its own user

RUN_LABELS = ("group", "port")
RESPONDER_LABELS = ("group", "port", "responder", "name")


class TextfileError(PingError):
    """The textfile could not be written. Exit status 2."""


def responder_label(stats: ResponderStats) -> str:
    """The responder's address; with the port when it answered from another port than
    the group's (one host answering from two ports is two series, never a duplicate)."""
    if not stats.wrong_port:
        return stats.address
    return host_port(stats.address, stats.port)


def name_label(name: Optional[str]) -> str:
    """A responder's own name, printable and bounded; empty for a plain echo server."""
    if not name:
        return ""
    text = shown(name)
    return text if len(text) <= MAX_NAME else text[:MAX_NAME - 1] + "…"


def exported(table: ResponderTable) -> list[ResponderStats]:
    """The responders given series: those that count for --expect first, MAX_RESPONDERS;
    never this host's own (an up series for it would only ever say this host hears itself)."""
    ordered = [stats for stats in table.in_order() if not stats.local]
    ordered.sort(key=lambda s: not s.counted)  # stable: by address
    return ordered[:MAX_RESPONDERS]


class ProbeRun:
    """The results of one run as metric families (a prometheus_client collector)."""

    def __init__(self, settings: Settings, table: ResponderTable, counts: RunCounts,
                 duration_s: float, finished_at: float) -> None:
        self.settings = settings
        self.table = table
        self.counts = counts
        self.duration_s = duration_s
        self.finished_at = finished_at

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily

        s, table, transmitted = self.settings, self.table, self.counts.transmitted
        run = [s.group, str(s.port)]
        answered = table.answered()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=RUN_LABELS)
            family.add_metric(run, value)
            return family

        yield gauge("mcast_echo_probe_success",
                    "1 if at least the expected number of responders answered.",
                    1 if answered >= s.expect else 0)
        yield gauge("mcast_echo_probe_responders",
                    "Responders that echoed a probe intact from the group's port (from "
                    "another host; by the group when they echo there).", answered)
        yield gauge("mcast_echo_probe_local_responders",
                    "This host's own responders that answered (no series, never counted).",
                    len(table.local()))
        yield gauge("mcast_echo_probe_expected_responders",
                    "Responders expected (--expect).", s.expect)
        yield gauge("mcast_echo_probe_probes_sent", "Probes sent in this run.", transmitted)
        yield gauge("mcast_echo_probe_duration_seconds", "How long the run took.",
                    round(self.duration_s, 6))
        yield gauge("mcast_echo_probe_timestamp_seconds",
                    "When the run ended, in seconds since 1970.", round(self.finished_at, 3))
        shown_responders = exported(table)
        yield gauge("mcast_echo_probe_responders_omitted",
                    f"Responders heard but given no series here (past the first "
                    f"{MAX_RESPONDERS}).",
                    sum(1 for stats in table if not stats.local) - len(shown_responders))

        up = GaugeMetricFamily("mcast_echo_probe_up",
                               "1 if the responder echoed a probe intact in this run.",
                               labels=RESPONDER_LABELS)
        loss = GaugeMetricFamily("mcast_echo_probe_loss_ratio",
                                 "Probes of this run the responder did not echo intact (0..1; "
                                 "by the group when it echoes there).",
                                 labels=RESPONDER_LABELS)
        hops = GaugeMetricFamily("mcast_echo_probe_hops",
                                 "Routers between the prober and the responder (from its "
                                 "trailer).", labels=RESPONDER_LABELS)
        rtt = SummaryMetricFamily("mcast_echo_probe_rtt_seconds",
                                  "Round-trip times of this run's echoes (per run, not "
                                  "cumulative).", labels=RESPONDER_LABELS)
        extremes = {stat: GaugeMetricFamily(f"mcast_echo_probe_rtt_{stat}_seconds",
                                            f"The {doc} round-trip time of this run.",
                                            labels=RESPONDER_LABELS)
                    for stat, doc in (("min", "shortest"), ("avg", "mean"),
                                      ("max", "longest"), ("p50", "median"))}
        for stats in shown_responders:
            labels = [s.group, str(s.port), responder_label(stats), name_label(stats.name)]
            counted = stats.counted
            up.add_metric(labels, 1 if counted else 0)
            measured = stats.measured()  # the group path's, when it echoes there
            received = min(measured.received, transmitted)
            if transmitted:
                loss.add_metric(labels, (transmitted - received) / transmitted)
            if measured.hops is not None:
                hops.add_metric(labels, measured.hops)
            rtt.add_metric(labels, count_value=measured.rtt.count,
                           sum_value=measured.rtt.mean_ns * measured.rtt.count / 1e9)
            if measured.rtt.count:
                for stat, value_ns in (("min", measured.rtt.min_ns),
                                       ("avg", measured.rtt.mean_ns),
                                       ("max", measured.rtt.max_ns),
                                       ("p50", measured.rtt.p50_ns)):
                    extremes[stat].add_metric(labels, value_ns / 1e9)
        yield from (up, loss, hops, rtt, *extremes.values())


def render(run: ProbeRun) -> bytes:
    """The exposition text of one run."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(run)  # type: ignore[arg-type]
    return generate_latest(registry)


def replace(path: str, data: bytes) -> None:
    """Replace the regular file *path* with *data* atomically; create it if it is absent.

    The directory is opened once and everything else is done relative to it: the
    temporary file is created there with O_EXCL and O_NOFOLLOW (mode 0644 set on its
    descriptor), fsynced, and renamed over PATH's last component, which is looked at
    with lstat just before -- a symbolic link, a FIFO, a device, a socket or a directory
    is refused (TextfileError) and left as it is: only a regular file is ever replaced,
    and no link is ever followed. Links in the directory's own path are the admin's.
    """
    directory = os.path.dirname(path) or "."
    base = os.path.basename(path)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise TextfileError(_problem(path, err)) from None
    try:
        _check_target(dir_fd, path, base)
        temporary, fd = _create_temporary(dir_fd, path, base)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fchmod(file.fileno(), FILE_MODE)
                os.fsync(file.fileno())
            _check_target(dir_fd, path, base)  # again: it may have changed during the write
            os.rename(temporary, base, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as err:
            try:
                os.unlink(temporary, dir_fd=dir_fd)
            except OSError:
                pass
            if isinstance(err, OSError):
                raise TextfileError(_problem(path, err)) from None
            raise
        try:
            os.fsync(dir_fd)  # make the rename durable; a directory that cannot is no error
        except OSError:
            pass
    finally:
        os.close(dir_fd)


_NOT_REGULAR = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_target(dir_fd: int, path: str, base: str) -> None:
    """TextfileError unless *base* (in *dir_fd*) is absent or a regular file; never follows
    a link."""
    if base in ("", ".", ".."):
        raise TextfileError(shown(f"cannot write --prometheus-textfile {path}: it names a "
                                  "directory: pass the path of a file, e.g. "
                                  "/var/lib/prometheus/node-exporter/mcast-echo.prom"))
    try:
        mode = os.stat(base, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise TextfileError(_problem(path, err)) from None
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
    raise TextfileError(shown(
        f"cannot write --prometheus-textfile {path}: it is {kind}, not a regular file, and is "
        "left as it is (only a regular file is replaced): remove it, or pass the path of a "
        "regular file, e.g. /var/lib/prometheus/node-exporter/mcast-echo.prom"))


_TEMPORARY_TRIES = 16


def _create_temporary(dir_fd: int, path: str, base: str) -> tuple[str, int]:
    """A new file beside *base* (a name node_exporter skips), created O_EXCL|O_NOFOLLOW."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TEMPORARY_TRIES):
        name = f".{base}.{secrets.token_hex(6)}.tmp"
        try:
            return name, os.open(name, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        except OSError as err:
            raise TextfileError(_problem(path, err)) from None
    raise TextfileError(_problem(path, FileExistsError(errno.EEXIST, "no free temporary name")))


def _problem(path: str, err: OSError) -> str:
    return shown(f"cannot write --prometheus-textfile {path}: {err.strerror or err}")


def write(path: str, run: ProbeRun) -> None:
    """Render *run* and replace *path* with it; TextfileError says what failed."""
    replace(path, render(run))
