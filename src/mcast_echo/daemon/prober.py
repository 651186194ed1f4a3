"""GET /probe on the metrics endpoint: one bounded `mcast-echo ping` run, as Prometheus
metrics, the way blackbox_exporter probes other protocols (it has no multicast prober).

``metrics: {listen: ..., probe: true}`` turns it on. A scrape such as
``/probe?group=239.1.1.1&port=5000&interface=eth0&count=3&expect=2&spread=100`` runs
``mcast-echo ping`` once from this host and answers with ``probe_success``,
``probe_duration_seconds`` and the per-responder series of the probe textfile
(ping/textfile.py), so one scrape config with relabelling checks many groups from
many hosts. Bounded three ways: only a group and port the config serves can be
probed; count, interval and deadline are capped; at most MAX_CONCURRENT probes run at
once (more get 503). The ping runs as a child process, so a probe can never stall the
echo loop or the /metrics scrapes, and is killed at its deadline.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, NamedTuple, Optional, Sequence
from urllib.parse import parse_qs

from ..schema import Listener
from ..wire.probe import MAX_SPREAD_MS

log = logging.getLogger(__name__)

MAX_CONCURRENT = 2
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
    """A /probe request that is not run: its status line and message."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class Prober:
    def __init__(self, listeners: Callable[[], Sequence[Listener]]) -> None:
        self._listeners = listeners
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    def request(self, query: str) -> ProbeRequest:
        """The probe a query string asks for; Refused (400/403) if it may not be run."""
        values = {key: items[-1] for key, items in parse_qs(query, max_num_fields=8).items()}
        unknown = set(values) - {"group", "port", "interface", "count", "expect", "spread"}
        if unknown:
            raise Refused("400 Bad Request", f"unknown parameter {sorted(unknown)[0][:20]!r}")
        try:
            group = str(ipaddress.ip_address(values.get("group", "")))
        except ValueError:
            raise Refused("400 Bad Request", "group= must be a multicast group address") \
                from None
        served = {(str(ipaddress.ip_address(item.group)), item.port): item
                  for item in self._listeners()}
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
        return ProbeRequest(group, port, interface, count, expect, spread)

    def run(self, request: ProbeRequest) -> bytes:
        """The exposition text of one ping run; Refused (503) when MAX_CONCURRENT run."""
        if not self._slots.acquire(blocking=False):
            raise Refused("503 Service Unavailable",
                          f"{MAX_CONCURRENT} probes are running; try again")
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

    @staticmethod
    def _ping(request: ProbeRequest, path: str) -> Optional[int]:
        target = (f"[{request.group}]:{request.port}" if ":" in request.group
                  else f"{request.group}:{request.port}")
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
            log.warning("metrics: probe of %s ran out of time", target)
            return None
        if done.returncode not in (0, 1):
            log.warning("metrics: probe of %s: %s", target,
                        done.stderr.decode(errors="replace").strip()[:200])
        return done.returncode
