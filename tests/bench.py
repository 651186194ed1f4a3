"""`make bench`: echo throughput, RTT percentiles, exec-to-READY=1 and RSS, as one small table.

Runs in the private namespace the make target made (the daemon in a netlab Host, clients
in the runner's namespace, over a veth). About a minute; every loop is bounded by a count
and a deadline. Figures depend on the machine: compare runs on the same one.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from daemonproc import DaemonProcess  # noqa: E402
from loadlab import (  # noqa: E402
    EchoLab,
    NotifySink,
    counters,
    flood,
    flood_result,
    require_private_netns,
)

GROUP, PORT = "224.3.29.71", 9999
CONFIG = "interface: eth0\nrecv_buffer: 4MiB\nrate_limit: off\nstatus_interval: 1\n"


def startup_times(runs: int) -> tuple[list[float], int]:
    """exec -> READY=1 (ms) for *runs* starts on lo, and the RSS (KiB) of the last at idle."""
    times, rss = [], 0
    with tempfile.TemporaryDirectory(prefix="mcast-echo-bench-") as tmp:
        config = Path(tmp) / "mcast-echo.yaml"
        config.write_text("interface: lo\n")
        for index in range(runs):
            sink = NotifySink(Path(tmp) / f"notify{index}.sock")
            t0 = time.monotonic()
            daemon = DaemonProcess(config, env=sink.env)
            try:
                sink.wait(lambda f: "READY" in f, 10, "READY=1")
                times.append((time.monotonic() - t0) * 1000)
                time.sleep(0.3)
                rss = daemon.rss_kib()
            finally:
                daemon.stop()
                sink.close()
    return times, rss


def rtts(source: str, size: int, count: int, seconds: float) -> list[float]:
    """Round trips in µs, one datagram at a time; bounded by *count* and *seconds*."""
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    samples: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
        sock.bind((source, 0))
        sock.settimeout(0.5)
        deadline = time.monotonic() + seconds
        while len(samples) < count and time.monotonic() < deadline:
            t0 = time.perf_counter_ns()
            sock.sendto(payload, (GROUP, PORT))
            try:
                sock.recv(65535)
            except socket.timeout:
                continue
            samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


def closed_loop(source: str, size: int, window: int, seconds: float) -> tuple[float, int]:
    """Echoes/s with *window* datagrams in flight (no loss expected), and how many were lost."""
    payload = bytes(size)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((source, 0))
        sock.settimeout(0.5)
        in_flight = back = lost = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            while in_flight < window:
                sock.sendto(payload, (GROUP, PORT))
                in_flight += 1
            try:
                sock.recv(65535)
                back += 1
                in_flight -= 1
            except socket.timeout:  # whatever is still out is not coming back
                lost += in_flight
                in_flight = 0
        return back / (time.monotonic() - t0), lost


def percentile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def throughput(lab: EchoLab, senders: int, sizes: str, seconds: float) -> dict:
    before = counters(lab.daemon, lab.sink)
    t0 = time.monotonic()
    procs = [flood(None, GROUP, PORT, source, seconds, 50_000_000, sizes)
             for source in lab.sources[:senders]]
    peak = 0
    while any(p.poll() is None for p in procs) and time.monotonic() < t0 + seconds + 20:
        peak = max(peak, lab.daemon.rss_kib())
        time.sleep(0.2)
    results = [flood_result(p) for p in procs]
    elapsed = max(r["seconds"] for r in results)
    after = counters(lab.daemon, lab.sink, settle=0.2)
    return {
        "sent": sum(r["sent"] for r in results) / elapsed,
        "received": (after["received"] - before["received"]) / elapsed,
        "echoed": (after["echoed"] - before["echoed"]) / elapsed,
        "got": sum(r["echoes"] for r in results) / elapsed,
        "mbit": sum(r["echoed_bytes"] for r in results) * 8 / elapsed / 1e6,
        "peak_rss": peak,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per throughput run")
    args = parser.parse_args()
    require_private_netns()
    rows: list[tuple[str, str]] = []

    starts, idle_rss_lo = startup_times(7)
    rows.append(("exec -> READY=1 (7 starts, on lo)",
                 f"median {statistics.median(starts):.0f} ms, min {min(starts):.0f}, "
                 f"max {max(starts):.0f}"))

    with EchoLab("bench", "10.71.0", CONFIG, sources=4) as lab:
        time.sleep(0.5)
        rows.append(("RSS idle", f"{lab.daemon.rss_kib()} KiB (on lo: {idle_rss_lo} KiB)"))
        for size, count in ((64, 5000), (1400, 3000), (65507, 500)):
            samples = sorted(rtts(lab.sources[0], size, count, 10))
            if not samples:
                rows.append((f"RTT {size} B over a veth", "no echoes"))
                continue
            rows.append((f"RTT {size} B over a veth ({len(samples)} round trips)",
                         f"p50 {percentile(samples, 50):.0f} µs, "
                         f"p90 {percentile(samples, 90):.0f}, "
                         f"p99 {percentile(samples, 99):.0f}, max {samples[-1]:.0f}"))
        for size in (64, 1400):
            rate, lost = closed_loop(lab.sources[0], size, 64, args.seconds)
            rows.append((f"throughput, closed loop, 64 x {size} B in flight",
                         f"echoed {rate:,.0f}/s ({lost} lost)"))
        for senders, sizes in ((1, "64"), (4, "64"), (4, "1400")):
            t = throughput(lab, senders, sizes, args.seconds)
            rows.append((f"throughput, {senders} sender(s) x {sizes} B, full speed",
                         f"echoed {t['echoed']:,.0f}/s (sent {t['sent']:,.0f}/s, received "
                         f"{t['received']:,.0f}/s), {t['mbit']:.0f} Mbit/s back"))
            if senders == 4 and sizes == "64":
                rows.append(("RSS under load (4 senders, peak)", f"{t['peak_rss']} KiB"))
        alive = lab.daemon.proc.poll() is None

    width = max(len(name) for name, _ in rows)
    print(f"\nmcast-echo bench ({os.cpu_count()} CPUs; the daemon shares them with the senders)")
    print("-" * (width + 60))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * (width + 60))
    if not alive:
        print("the daemon died during the bench")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
