"""GET /probe on the metrics endpoint: one bounded `mcast-echo ping` run, as Prometheus
metrics, the way blackbox_exporter probes other protocols (it has no multicast prober).

``metrics: {listen: ..., probe: true}`` turns it on. A scrape such as
``/probe?group=239.1.1.1&port=5000&interface=eth0&count=3&expect=2&spread=100`` runs
``mcast-echo ping`` once from this host and answers with ``probe_success``,
``probe_duration_seconds`` and the per-responder series of the probe textfile
(ping/textfile.py), so one scrape config with relabelling checks many groups from
many hosts. The ping runs as a child process, so a probe can never stall the echo
loop or the /metrics scrapes, and is killed at its deadline.

Everything in a query is hostile, and a child process is the costly part, so no
request starts one until it has passed every check: a bad request (a field too many,
an unknown one, a group and port the config does not serve, count or expect out of
range, an interface this host does not have) is a 400 or 403 with a one-line reason,
for the cost of parsing a query and a syscall or two. Probes that pass are
rate-limited (RATE a second, bursts of BURST: past it 429) and at most MAX_CONCURRENT
run at once (503); both carry Retry-After. Log lines a peer can cause go through a
RateLimitedLog.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, NamedTuple, Optional, Sequence
from urllib.parse import parse_qs

from ..addresses import host_port
from ..net import ifaddr
from ..schema.listener import Listener
from ..wire.probe import MAX_SPREAD_MS
from .ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

MAX_CONCURRENT = 2
RATE = 1.0  # probes started per second, over all clients (a probe spawns a Python process)
BURST = 5  # probes that may start at once after a quiet spell
MAX_FIELDS = 8  # query fields; there are five parameters
MAX_COUNT = 10
DEFAULT_COUNT = 3
INTERVAL = 0.2  # seconds between probes of one run
WAIT = 1.0  # seconds to wait for echoes after the last probe
MAX_EXPECT = 4096
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:@%-]{1,64}$")


class ProbeRequest(NamedTuple):
    group: str
    port: int
    interface: Optional[str]
    count: int
    expect: int
    spread: int = 0  # ms: responders delay each echo by 0..spread (ping --spread)

    @property
    def deadline(self) -> float:
        return self.count * INTERVAL + WAIT + self.spread / 1000 + 2.0


class Refused(Exception):
    """A /probe request that is not run: its status line, message and, when trying again
    later can help, the seconds to wait (Retry-After)."""

    def __init__(self, status: str, message: str, retry_after: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Prober:
    def __init__(self, listeners: Callable[[], Sequence[Listener]]) -> None:
        self._listeners = listeners
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self._lock = threading.Lock()
        self._tokens = float(BURST)
        self._refilled = time.monotonic()
        self._served: tuple[object, dict] = (None, {})  # (listeners, their index)
        self._log = RateLimitedLog(log)

    def _served_index(self) -> dict:
        """(group, port) -> Listener, built once per config (a reload replaces the tuple)."""
        listeners = self._listeners()
        if self._served[0] is not listeners:
            self._served = (listeners, {(str(ipaddress.ip_address(item.group)), item.port): item
                                        for item in listeners})
        return self._served[1]

    def request(self, query: str) -> ProbeRequest:
        """The probe a query string asks for; Refused (400/403) if it may not be run."""
        try:
            fields = parse_qs(query, max_num_fields=MAX_FIELDS)
        except ValueError:
            raise Refused("400 Bad Request", f"more than {MAX_FIELDS} query fields") from None
        values = {key: items[-1] for key, items in fields.items()}
        unknown = set(values) - {"group", "port", "interface", "count", "expect", "spread"}
        if unknown:
            raise Refused("400 Bad Request", f"unknown parameter {sorted(unknown)[0][:20]!r}")
        try:
            group = str(ipaddress.ip_address(values.get("group", "")))
        except ValueError:
            raise Refused("400 Bad Request", "group= must be a multicast group address") \
                from None
        served = self._served_index()
        ports = [port for (g, port) in served if g == group]
        try:
            port = int(values["port"]) if "port" in values else (ports[0] if ports else 0)
            count = int(values.get("count", DEFAULT_COUNT))
            expect = int(values.get("expect", 1))
            spread = int(values.get("spread", 0))
        except ValueError:
            raise Refused("400 Bad Request", "port, count, expect and spread are integers") \
                from None
        if (group, port) not in served:
            raise Refused("403 Forbidden", f"{group} port {port} is not a group this "
                          "daemon serves: only configured listeners can be probed")
        if (not 1 <= count <= MAX_COUNT or not 0 <= expect <= MAX_EXPECT
                or not 0 <= spread <= MAX_SPREAD_MS):
            raise Refused("400 Bad Request", f"count is 1..{MAX_COUNT}, expect 0..{MAX_EXPECT}, "
                          f"spread 0..{MAX_SPREAD_MS} (ms)")
        interface = values.get("interface") or served[(group, port)].interface
        if interface == "all":
            interface = None
        if interface is not None and not _INTERFACE.match(interface):
            raise Refused("400 Bad Request", "interface= is a name or an address")
        if "interface" in values and interface is not None and not _is_local(interface):
            raise Refused("400 Bad Request", f"interface={interface} is neither an interface "
                          "nor an address of this host")
        return ProbeRequest(group, port, interface, count, expect, spread)

    def _take_token(self) -> None:
        """One probe's share of the rate limit; Refused (429) when none is left."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(BURST), self._tokens + (now - self._refilled) * RATE)
            self._refilled = now
            if self._tokens < 1:
                wait = math.ceil((1 - self._tokens) / RATE)
                raise Refused("429 Too Many Requests", f"more than {RATE:g} probe(s) a second "
                              f"(bursts of {BURST}); try again in {wait} s", wait)
            self._tokens -= 1

    def run(self, request: ProbeRequest) -> bytes:
        """The exposition text of one ping run; Refused when MAX_CONCURRENT run (503) or
        over the rate limit (429)."""
        if not self._slots.acquire(blocking=False):
            raise Refused("503 Service Unavailable",
                          f"{MAX_CONCURRENT} probes are running; try again",
                          math.ceil(request.deadline))
        try:
            self._take_token()
        except Refused:
            self._slots.release()
            raise
        started = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="mcast-echo-probe-") as directory:
                path = os.path.join(directory, "probe.prom")
                status = self._ping(request, path)
                try:
                    with open(path, "rb") as f:
                        body = f.read(4 << 20)
                except OSError:
                    body = b""
        finally:
            self._slots.release()
        duration = time.monotonic() - started
        success = 1 if status == 0 else 0
        return body + (
            "# HELP probe_success Whether the probe met its expected number of responders.\n"
            "# TYPE probe_success gauge\n"
            f"probe_success {success}\n"
            "# HELP probe_duration_seconds How long the probe took.\n"
            "# TYPE probe_duration_seconds gauge\n"
            f"probe_duration_seconds {duration:.6f}\n").encode()

    def _ping(self, request: ProbeRequest, path: str) -> Optional[int]:
        target = host_port(request.group, request.port)
        command = [sys.executable, "-m", "mcast_echo", "ping", target,
                   "-c", str(request.count), "-i", str(INTERVAL), "-W", str(WAIT),
                   "-w", f"{request.deadline:g}", "-q", "-n", "--expect", str(request.expect),
                   "--spread", str(request.spread), "--prometheus-textfile", path]
        if request.interface:
            command += ["-I", request.interface]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=request.deadline + 5,
                                  check=False)
        except subprocess.TimeoutExpired:
            self._log.log("probe-timeout", logging.WARNING,
                          "metrics: probe of %s ran out of time", target)
            return None
        if done.returncode not in (0, 1):
            self._log.log("probe-failed", logging.WARNING, "metrics: probe of %s: %s", target,
                          done.stderr.decode(errors="replace").strip()[:200]
                          .encode("unicode_escape").decode("ascii"))
        return done.returncode


def _is_local(interface: str) -> bool:
    """Is *interface* a name of an interface, or an address, of this host? One ioctl (or a
    read of /proc/net/if_inet6): checked before a probe process is started for it."""
    try:
        address = ipaddress.ip_address(interface.split("%", 1)[0])
    except ValueError:
        return ifaddr.interface_flags(interface) is not None
    return ifaddr.index_of_address(str(address)) is not None
