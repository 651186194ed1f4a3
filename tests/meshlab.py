"""A mesh lab (#23): N hosts (netlab Hosts) on one bridge with IGMP snooping and a querier,
each running the real daemon with a `mesh:` section and a metrics endpoint, and the
faults the acceptance needs, made on the bridge with nftables (bridge family).

The bridge lives in the test's own namespace (10.91.0.1/16, where the test scrapes the
daemons from). Its intervals are set first and the querier switched on after: made in one
command with `mcast_querier 1`, the bridge leaves snooping off for ~10 s and floods every
group. Host i is 10.91.B.(10 + i), B = 1 + its block (block(): the hosts split in two
halves, for a partition), on its eth0, port mbrp<i> of the bridge.

Faults (bridge forward hook, so only what the switch forwards is dropped; unicast, and the
bridge's own IGMP queries, still flow):
- deafen(i): drop IPv4 multicast forwarded out of host i's port -- a switch port that
  delivers no multicast to its host (the host's own multicast still goes out);
- partition(): drop IPv4 multicast forwarded from a port of one half to a port of the
  other -- two groups of hosts whose multicast cannot cross;
- heal(): drop no more.

Run as a script to measure CPU and RSS per daemon (bounded): python tests/meshlab.py
--hosts 50 --interval 1 --seconds 30 (inside `unshare --net`, as root).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemonproc import DaemonProcess  # noqa: E402
from loadlab import NotifySink  # noqa: E402
from netlab import ClosedOnExit, Host, ip, unplug  # noqa: E402
from waiting import wait_until  # noqa: E402

BRIDGE = "mbr"
SUBNET = "10.91"
BRIDGE_ADDR = f"{SUBNET}.0.1"
GROUP = "239.255.77.77"
PORT = 9998
METRICS_PORT = 9101
NFT_TABLE = "meshlab"
# Snooping with short timers (centiseconds): a query every second, answered within 0.5 s
BRIDGE_TIMERS = ("mcast_query_interval", "100", "mcast_query_response_interval", "50",
                 "mcast_startup_query_interval", "25")
_SAMPLE = re.compile(r'^(mcast_echo_mesh_\w+)(?:\{(\w+)="([^"]*)"[^}]*\})? (\S+)$', re.M)


def nft(*args: str) -> None:
    subprocess.run(["nft", *args], check=True, capture_output=True, text=True)


class StatusLines:
    """Every STATUS a daemon sends to *sink*, read as it comes (an unread sink fills, and
    then the daemon's next notify would wait for room)."""

    def __init__(self, sink: NotifySink) -> None:
        self.sink = sink
        self.lines: list[str] = []
        self._open = True
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while self._open:
            try:
                fields = self.sink.receive(0.2)
            except OSError:  # a timeout (socket.timeout is an OSError), or closed
                continue
            if "STATUS" in fields:
                self.lines.append(fields["STATUS"])

    def mark(self) -> int:
        return len(self.lines)

    def wait_for(self, text: str, timeout: float, start: int = 0) -> str:
        """The first STATUS (from index *start*) containing *text*; fails after *timeout*."""
        wait_until(lambda: any(text in line for line in self.lines[start:]), timeout,
                   f"STATUS with {text!r}")
        return next(line for line in self.lines[start:] if text in line)

    def close(self) -> None:
        self._open = False
        self._reader.join(2)
        self.sink.close()


class Scrape(dict):
    """One daemon's mesh series: {(name, label value or ""): value}."""

    def get_value(self, name: str, label: str = "") -> float:
        return self.get((name, label), 0.0)


def scrape_text(text: str) -> Scrape:
    found = Scrape()
    for name, _label, value, number in _SAMPLE.findall(text):
        found[(name, value)] = float(number)
    return found


class MeshLab(ClosedOnExit):
    def __init__(self, workdir: Path, count: int, interval: float = 0.2,
                 expect: Optional[int] = None, extra: str = "",
                 notify: tuple[int, ...] = ()) -> None:
        """*count* hosts running the daemon (*extra*: more config lines); hosts in *notify*
        get a NotifySink, drained into self.statuses[i], and status_interval 1."""
        self.workdir = workdir
        self.count = count
        self.hosts: list[Host] = []
        self.daemons: list[DaemonProcess] = []
        self.statuses: dict[int, StatusLines] = {}
        self.ports: list[str] = []
        self._nft = False
        try:
            ip("link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "1", *BRIDGE_TIMERS,
               "stp_state", "0")
            ip("link", "set", BRIDGE, "type", "bridge", "mcast_querier", "1")
            ip("addr", "add", f"{BRIDGE_ADDR}/16", "dev", BRIDGE)
            ip("link", "set", BRIDGE, "up")
            nft("add", "table", "bridge", NFT_TABLE)
            self._nft = True
            nft("add", "chain", "bridge", NFT_TABLE, "forward",
                "{ type filter hook forward priority 0; }")
            for index in range(count):
                self.hosts.append(self._plug(f"mesh{index}", index))
            self.started = time.monotonic()
            for index, host in enumerate(self.hosts):
                path = workdir / f"mesh{index}.yaml"
                status = "status_interval: 1\n" if index in notify else ""
                path.write_text(
                    f"group: 239.1.1.1\nport: 9999\ninterface: eth0\nlog_level: debug\n"
                    f"{status}metrics: {{listen: \"0.0.0.0:{METRICS_PORT}\"}}\n"
                    f"mesh: {{group: {GROUP}, port: {PORT}, interface: eth0, "
                    f"interval: {interval}" + (f", expect: {expect}" if expect else "") +
                    f"}}\n{extra}")
                env = None
                if index in notify:
                    self.statuses[index] = StatusLines(NotifySink(workdir / f"notify{index}.sock"))
                    env = self.statuses[index].sink.env
                self.daemons.append(DaemonProcess(path, host=host, env=env))
            for daemon in self.daemons:
                daemon.wait_for("ready:", timeout=30)
            self.ready = time.monotonic()
        except BaseException:
            self.close()
            raise

    def _plug(self, name: str, index: int) -> Host:
        host = Host(name)
        self._cable(host, f"{BRIDGE}p{index}", self.address(index))
        return host

    def _cable(self, host: Host, port: str, address: str) -> None:
        """*host*'s eth0 (*address*/16, the multicast route) on the bridge's *port*."""
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", str(host.pid))
        ip("link", "set", port, "master", BRIDGE)
        ip("link", "set", port, "up")
        self.ports.append(port)
        ip("addr", "add", f"{address}/16", "dev", "eth0", host=host)
        ip("link", "set", "eth0", "up", "multicast", "on", host=host)
        ip("route", "replace", "224.0.0.0/4", "dev", "eth0", host=host)

    def block(self, index: int) -> int:
        return 0 if index < (self.count + 1) // 2 else 1

    def address(self, index: int) -> str:
        return f"{SUBNET}.{1 + self.block(index)}.{10 + index}"

    def attacker(self) -> tuple[Host, str]:
        """One more host on the bridge, 10.91.3.1, running no daemon (closed with the lab)."""
        host = Host("meshattacker")
        self.hosts.append(host)
        self._cable(host, f"{BRIDGE}a", f"{SUBNET}.3.1")
        return host, f"{SUBNET}.3.1"

    # ---------------------------------------------------------------- faults

    def deafen(self, index: int) -> None:
        nft("add", "rule", "bridge", NFT_TABLE, "forward", "oifname", self.ports[index],
            "ip", "daddr", "224.0.0.0/4", "drop")

    def partition(self) -> None:
        halves = [[p for i, p in enumerate(self.ports[:self.count]) if self.block(i) == b]
                  for b in (0, 1)]
        for one, other in (halves, halves[::-1]):
            nft("add", "rule", "bridge", NFT_TABLE, "forward", "iifname",
                "{ " + ", ".join(one) + " }", "oifname", "{ " + ", ".join(other) + " }",
                "ip", "daddr", "224.0.0.0/4", "drop")

    def heal(self) -> None:
        nft("flush", "chain", "bridge", NFT_TABLE, "forward")

    # ---------------------------------------------------------------- reading

    def scrape(self) -> list[Scrape]:
        """Every daemon's mesh series, scraped at once (threads: the least skew)."""
        def one(index: int) -> Scrape:
            url = f"http://{self.address(index)}:{METRICS_PORT}/metrics"
            for attempt in range(3):  # at 50 hosts, a first connect may wait on ARP
                try:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        return scrape_text(response.read().decode())
                except OSError:
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")
        with concurrent.futures.ThreadPoolExecutor(min(self.count, 16)) as pool:
            return list(pool.map(one, range(self.count)))

    def ratios(self, before: list[Scrape], after: list[Scrape]
               ) -> dict[tuple[int, int], tuple[float, float]]:
        """{(P, R): (forward, reverse)} for every ordered pair, between two scrapes."""
        found = {}
        for p in range(self.count):
            sent = after[p].get_value("mcast_echo_mesh_probes_sent_total") - \
                before[p].get_value("mcast_echo_mesh_probes_sent_total")
            for r in range(self.count):
                if r == p:
                    continue
                replies = after[p].get_value("mcast_echo_mesh_replies_total", self.address(r)) - \
                    before[p].get_value("mcast_echo_mesh_replies_total", self.address(r))
                heard = after[r].get_value("mcast_echo_mesh_heard_total", self.address(p)) - \
                    before[r].get_value("mcast_echo_mesh_heard_total", self.address(p))
                found[p, r] = (replies / sent if sent else 0.0, heard / sent if sent else 0.0)
        return found

    def cpu_seconds(self) -> list[float]:
        """Each daemon's CPU time (user + system) so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        found = []
        for daemon in self.daemons:
            with open(f"/proc/{daemon.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            found.append((int(fields[11]) + int(fields[12])) / ticks)
        return found

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()
        for statuses in self.statuses.values():
            statuses.close()
        for host in self.hosts:
            host.close()
        for port in self.ports:
            unplug(port)
        unplug(BRIDGE)
        if self._nft:
            subprocess.run(["nft", "delete", "table", "bridge", NFT_TABLE], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU and RSS per daemon of an N-host mesh")
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.TemporaryDirectory() as workdir, \
            MeshLab(Path(workdir), min(args.hosts, 200), args.interval) as lab:
        print(f"{lab.count} daemons ready in {lab.ready - lab.started:.1f} s", flush=True)
        time.sleep(3 * args.interval + 2)  # a stimulus: let every host hear every other
        cpu, start = lab.cpu_seconds(), time.monotonic()
        time.sleep(min(args.seconds, 600))  # the window measured
        cpu_after, window = lab.cpu_seconds(), time.monotonic() - start
        shares = sorted(100 * (b - a) / window for a, b in zip(cpu, cpu_after))
        rss = sorted(daemon.rss_kib() for daemon in lab.daemons)
        print(f"window {window:.1f} s at interval {args.interval} s: CPU per daemon "
              f"median {shares[len(shares) // 2]:.2f} %, max {shares[-1]:.2f} % of a core; "
              f"RSS median {rss[len(rss) // 2] / 1024:.1f} MiB, max {rss[-1] / 1024:.1f} MiB",
              flush=True)
        try:
            heard = sorted(s.get_value("mcast_echo_mesh_peers_heard") for s in lab.scrape())
            print(f"peers_heard: min {heard[0]:.0f}, max {heard[-1]:.0f}")
        except OSError as e:
            print(f"scrape failed: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
