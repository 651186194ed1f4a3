"""Scale measurements (#18.7, #18.8): the longest gap in the echo a steady client sees, and a
many-listener config. Also a script: `unshare --net -- .venv/bin/python tests/scalelab.py`
prints the worst stall at 4,096 listeners during membership checks, a reload and scrapes,
the daemon's CPU per scrape, and the share of a flood echoed with and without scrapes back
to back (#18.8).

A StallMeter pings one group at a steady rate from the test's namespace (another host) and
records when each echo comes back; the worst stall in a window is the longest time between
two echoes in it. Everything is bounded by a count and a deadline.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import Optional, Sequence

from waiting import wait_until

PING_INTERVAL = 0.002  # seconds between probes: 500 a second, inside the default rate limit


def listeners_config(count: int, port: int, interface: Optional[str] = None,
                     extra: str = "", each: str = "") -> str:
    """*count* listeners on groups 239.20.x.y (the first is 239.20.0.1), one port; *each*
    is a line of settings added to every listener."""
    lines = [f"port: {port}\n", f"interface: {interface or 'null'}\n", extra, "listeners:\n"]
    lines += [f"  - group: 239.20.{n // 250}.{n % 250 + 1}\n" + (f"    {each}" if each else "")
              for n in range(count)]
    return "".join(lines)


class StallMeter:
    """Ping *group*:*port* from *local* every PING_INTERVAL s in a thread; echo times kept."""

    def __init__(self, local: str, group: str, port: int, seconds: float = 60) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((local, 0))
        self.sock.settimeout(PING_INTERVAL)
        self.group, self.port = group, port
        self.sent = 0
        self.echoes: list[float] = []  # monotonic arrival times
        self._stop = threading.Event()
        self._deadline = time.monotonic() + seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_send = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            now = time.monotonic()
            if now >= next_send:
                self.sock.sendto(struct.pack("!I", self.sent), (self.group, self.port))
                self.sent += 1
                next_send += PING_INTERVAL
                if next_send < now:  # we were descheduled: do not catch up in a burst
                    next_send = now + PING_INTERVAL
            try:
                self.sock.recv(64)
                self.echoes.append(time.monotonic())
            except (socket.timeout, BlockingIOError):
                pass

    def worst_gap(self, start: float, end: float) -> float:
        """The longest time without an echo between *start* and *end* (monotonic)."""
        times = [start] + [t for t in self.echoes if start <= t <= end] + [end]
        return max(b - a for a, b in zip(times, times[1:]))

    def wait_echoes(self, count: int, timeout: float) -> None:
        target = len(self.echoes) + count
        wait_until(lambda: len(self.echoes) >= target, timeout, f"{count} echoes")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def main() -> None:
    import signal
    import sys
    import tempfile
    import urllib.request
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from daemonproc import DaemonProcess
    from loadlab import NotifySink, require_private_netns
    from netlab import Host, unplug, veth

    require_private_netns()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    each = sys.argv[2] if len(sys.argv) > 2 else ""  # e.g. "allow: [10.0.0.0/8]\n" per listener
    port = 9950
    with tempfile.TemporaryDirectory() as tmp, Host("scale") as host:
        veth("vscale", "10.95.0.1/24", host, "eth0", "10.95.0.2/24")
        config = Path(tmp) / "c.yaml"
        config.write_text(listeners_config(count, port, each=each, extra=(
            "rate_limit: off\nmetrics: {listen: '127.0.0.1:9111'}\n")))
        sink = NotifySink(Path(tmp) / "n.sock")
        t0 = time.monotonic()
        daemon = DaemonProcess(config, host=host, env=sink.env)
        try:
            daemon.wait_for("ready:", timeout=120)
            print(f"{count} listeners: ready in {time.monotonic() - t0:.1f} s, "
                  f"RSS {daemon.rss_kib()} KiB")
            meter = StallMeter("10.95.0.1", "239.20.0.1", port, seconds=60)
            meter.wait_echoes(200, 10)
            a = time.monotonic()
            time.sleep(3)  # the window measured: several membership checks
            print(f"membership checks: worst gap {meter.worst_gap(a, time.monotonic()) * 1000:.0f}"
                  f" ms over 3 s, {len(meter.echoes)}/{meter.sent} echoed")
            mark = daemon.mark()
            config.write_text(listeners_config(count, port, each=each, extra=(
                "rate_limit: off\nttl: 2\nmetrics: {listen: '127.0.0.1:9111'}\n")))
            a = time.monotonic()
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("reloaded:", start=mark, timeout=60)
            b = time.monotonic()
            time.sleep(0.5)  # the window measured: the reload's aftermath
            print(f"reload: {b - a:.2f} s, worst gap "
                  f"{meter.worst_gap(a, time.monotonic()) * 1000:.0f} ms")
            for how, flags in (("plain", []), ("gzip", ["--compressed"])):
                a = time.monotonic()
                sent, echoed = meter.sent, len(meter.echoes)
                cpu = daemon_cpu(daemon.pid)
                sizes = []
                for _ in range(5):
                    with host_urlopen(host, "http://127.0.0.1:9111/metrics", flags) as size:
                        sizes.append(size)
                b = time.monotonic()
                cpu = daemon_cpu(daemon.pid) - cpu
                time.sleep(0.2)  # the window measured: the last echoes in flight
                print(f"5 {how} scrapes of {sizes[0]} bytes: {b - a:.2f} s, daemon CPU "
                      f"{cpu / 5 * 1000:.0f} ms a scrape, worst gap "
                      f"{meter.worst_gap(a, b) * 1000:.0f} ms, "
                      f"{len(meter.echoes) - echoed} of {meter.sent - sent} echoed meanwhile")
            meter.close()
            for scraping in (False, True, False, True):
                sent, echoed, scrapes = flood(host, "10.95.0.1", ("239.20.0.1", port), scraping)
                print(f"flood for 2 s{' with scrapes back to back' if scraping else ''}: "
                      f"{echoed} of {sent} echoed ({echoed / sent:.0%}), {scrapes} scrapes")
            for away in (0.0, 3.0):  # the interface deleted, then re-created
                unplug("vscale")
                time.sleep(away)  # the stimulus: how long the interface stays gone
                a = time.monotonic()
                veth("vscale", "10.95.0.1/24", host, "eth0", "10.95.0.2/24")
                meter = StallMeter("10.95.0.1", "239.20.0.1", port, seconds=30)
                meter.wait_echoes(1, 25)
                first = meter.echoes[0] - a
                meter.close()
                last = StallMeter("10.95.0.1", f"239.20.{(count - 1) // 250}."
                                  f"{(count - 1) % 250 + 1}", port, seconds=30)
                last.wait_echoes(1, 25)
                print(f"interface re-created after {away:.0f} s away: echo back in "
                      f"{first:.2f} s (first group), {last.echoes[0] - a:.2f} s (last group)")
                last.close()
        finally:
            daemon.kill()
            sink.close()
            unplug("vscale")
    del urllib


def flood(host, local: str, group: tuple[str, int], scraping: bool,
          seconds: float = 2.0) -> tuple[int, int, int]:
    """Send to *group* as fast as one thread can for *seconds* (at most 1,000,000), and
    count the echoes; with *scraping*, /metrics is scraped back to back meanwhile. The
    datagrams sent, the echoes, the scrapes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((local, 0))
    sock.settimeout(0.2)
    stop = threading.Event()
    echoes = [0]
    scrapes = [0]

    def receive() -> None:
        while True:
            try:
                sock.recv(64)
                echoes[0] += 1
            except socket.timeout:
                if stop.is_set():
                    return
            except OSError:
                return

    def scrape() -> None:
        while not stop.is_set():
            with host_urlopen(host, "http://127.0.0.1:9111/metrics"):
                scrapes[0] += 1

    threads = [threading.Thread(target=receive)]
    if scraping:
        threads.append(threading.Thread(target=scrape))
    for thread in threads:
        thread.start()
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and sent < 1_000_000:
        for _ in range(100):
            try:
                sock.sendto(b"flood", group)
                sent += 1
            except OSError:  # ENOBUFS: the device queue is full
                time.sleep(0.0005)  # the flood's pace when the device is full
    stop.set()
    for thread in threads:
        thread.join(30)
    sock.close()
    return sent, echoes[0], scrapes[0]


def daemon_cpu(pid: int) -> float:
    """Seconds of CPU process *pid* has used (user and system, all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class host_urlopen:
    """GET *url* from inside *host* (curl, with *flags*); the body's size as sent."""

    def __init__(self, host, url: str, flags: Sequence[str] = ()) -> None:
        self.host, self.url, self.flags = host, url, list(flags)

    def __enter__(self) -> int:
        done = self.host.run(["curl", "-s", *self.flags, "-o", "/dev/null", "-w",
                              "%{size_download}", self.url], timeout=60)
        return int(done.stdout)

    def __exit__(self, *exc) -> None:
        pass


if __name__ == "__main__":
    main()
