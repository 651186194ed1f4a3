"""`make soak`: four senders at full speed against the daemon for --seconds (default 60).

Checks (issue 5, "Load"): RSS growth under 2 MiB from a warmed-up baseline; a normal probe
is answered right after the flood; SIGTERM during a flood exits 0 within 1 s, having left
the group. Prints the figures; exits 1 if any check fails. Runs in the private namespace
the make target made; every sender is bounded by a count and the duration.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loadlab import (  # noqa: E402
    EchoLab,
    counters,
    flood,
    flood_result,
    require_private_netns,
    settled_counters,
)
from mcast_echo.wire import probe  # noqa: E402
from waiting import wait_until  # noqa: E402

GROUP, PORT = "224.3.29.71", 9999
SIZES = "64,64,64,512,64,1400,64,8000"  # mostly small: the most datagrams per second
MAX_GROWTH_KIB = 2048
PER_SENDER_COUNT = 100_000_000  # the duration ends the flood; the count only bounds it


def probe_answered(source: str, hostname: str) -> tuple[bool, str]:
    session = random.getrandbits(32)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
        sock.bind((source, 0))
        sock.settimeout(1.0)
        sent = time.monotonic()
        sock.sendto(probe.build_probe(session, 1, time.time_ns(), 192), (GROUP, PORT))
        deadline = sent + 1.0
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65535)
            except socket.timeout:
                break
            checked = probe.check_echo(data, session)
            if checked is not None and checked.intact and checked.trailer is not None:
                rtt = (time.monotonic() - sent) * 1000
                ok = checked.trailer.hostname == hostname
                return ok, f"answered by {checked.trailer.hostname} in {rtt:.2f} ms"
    return False, "no answer within 1 s"


def udp_receive_buffer_errors(lab: EchoLab) -> int:
    """Datagrams the responder host's kernel dropped for a full receive buffer (all sockets)."""
    lines = [line.split() for line in lab.host.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
             if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rate-limit", choices=("off", "default"), default="off",
                        help="off (default): every datagram is echoed, the hardest case for "
                             "the echo path; default: the shipped rate limit")
    args = parser.parse_args()
    require_private_netns()
    config = "interface: eth0\nrecv_buffer: 4MiB\nstatus_interval: 1\n"
    if args.rate_limit == "off":
        config += "rate_limit: off\n"
    failures: list[str] = []

    with EchoLab("soak", "10.70.0", config, sources=args.senders) as lab:
        daemon = lab.daemon
        pid = daemon.pid
        print(f"daemon pid {pid} in host 'soak'; {args.senders} senders, {args.seconds:g} s, "
              f"sizes {SIZES}, rate_limit {args.rate_limit}")
        # warm-up: every path the soak will use, so the baseline is not a cold start
        warm = [flood(None, GROUP, PORT, s, 2, 200_000, SIZES, probes=True) for s in lab.sources]
        for proc in warm:
            flood_result(proc)
        start_counts = settled_counters(daemon, lab.sink)  # the warm-up all handled
        before = daemon.rss_kib()
        start_overflow = udp_receive_buffer_errors(lab)

        t0 = time.monotonic()
        senders = [flood(None, GROUP, PORT, s, args.seconds, PER_SENDER_COUNT, SIZES,
                         probes=True) for s in lab.sources]
        peak = before
        next_report = t0 + 10
        while any(p.poll() is None for p in senders):
            if daemon.proc.poll() is not None:
                failures.append(f"the daemon exited ({daemon.proc.returncode}) mid-soak")
                break
            peak = max(peak, daemon.rss_kib())
            if time.monotonic() >= next_report:
                lab.sink.drain()
                print(f"  {time.monotonic() - t0:5.0f} s  RSS {daemon.rss_kib()} KiB  "
                      f"{lab.sink.last_status or ''}")
                next_report += 10
            try:
                daemon.proc.wait(0.2)  # a sample every 0.2 s, unless the daemon exits
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > t0 + args.seconds + 30:
                failures.append("senders did not stop")
                break
        results = [flood_result(p, timeout=10) for p in senders]
        elapsed = time.monotonic() - t0
        end_counts = settled_counters(daemon, lab.sink)  # the flood all handled
        after = daemon.rss_kib()
        overflow = udp_receive_buffer_errors(lab) - start_overflow
        answered, how = probe_answered(lab.sources[0], "soak")

        echoed = end_counts["echoed"] - start_counts["echoed"]
        received = end_counts["received"] - start_counts["received"]
        sent = sum(r["sent"] for r in results)
        got = sum(r["echoes"] for r in results)
        bad = sum(r["bad_echoes"] for r in results)
        print(f"\nsent {sent} datagrams in {elapsed:.1f} s ({sent / elapsed:,.0f}/s); daemon "
              f"received {received} ({received / elapsed:,.0f}/s), echoed {echoed} "
              f"({echoed / elapsed:,.0f}/s); senders got {got} echoes, {bad} not intact; the "
              f"kernel dropped {overflow} for a full receive buffer (the senders outrun it)")
        print(f"daemon counters: {end_counts}")
        print(f"RSS before {before} KiB, after {after} KiB (growth {after - before} KiB, "
              f"peak {peak} KiB; limit +{MAX_GROWTH_KIB} KiB)")
        print(f"probe right after the flood: {how}")
        if after - before >= MAX_GROWTH_KIB:
            failures.append(f"RSS grew {after - before} KiB")
        if not answered:
            failures.append(f"probe after the flood: {how}")
        if bad:
            failures.append(f"{bad} echoes were not byte-identical")
        if echoed == 0:
            failures.append("nothing echoed")

        # SIGTERM in the middle of a flood
        before_term = counters(daemon, lab.sink)["received"]
        senders = [flood(None, GROUP, PORT, s, 4, PER_SENDER_COUNT, SIZES)
                   for s in lab.sources]
        wait_until(lambda: counters(daemon, lab.sink)["received"] > before_term + 10_000, 10,
                   "10,000 datagrams of the flood received")
        mark = daemon.mark()
        t_term = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.stop(timeout=5)  # SIGTERM is already on its way
        except subprocess.TimeoutExpired:
            code = None
        exit_time = time.monotonic() - t_term
        for proc in senders:
            flood_result(proc)
        left = any(f"left {GROUP} on eth0" in line for line in daemon.lines[mark:])
        still_member = ("eth0", GROUP) in lab.host.igmp_groups()
        print(f"SIGTERM during the flood: exit {code} after {exit_time * 1000:.0f} ms; "
              f"'left {GROUP} on eth0' logged: {left}; still in /proc/net/igmp: {still_member}")
        if code != 0 or exit_time >= 1.0:
            failures.append(f"SIGTERM: exit {code} after {exit_time:.2f} s")
        if not left or still_member:
            failures.append("SIGTERM: the group was not left")
        if "Traceback" in daemon.log:
            failures.append("a traceback in the daemon's log")

    print("\nsoak: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
