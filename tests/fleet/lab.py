"""The fleet's machinery: N sdlab hosts on one IGMP-snooping bridge, and a monitor namespace.

Everything lives in namespaces this module creates: a "switch" netns holding the bridge (snooping
and querier on), one veth per host (the host's end is its eth0, in the container's own netns) and
one for the monitor netns. Nothing is ever attached to, or sent on, this machine's interfaces.

What a run creates is written down in its state directory as it is created (the sdlab instances,
the netns names, the PIDs of the processes started in the monitor), so that the next run can tear
down what a killed run left (see `down_leftovers`).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SDLAB = ROOT / "tests" / "system" / "sdlab"

NETNS_SWITCH = "mcast-echo-fleet-sw"
NETNS_MONITOR = "mcast-echo-fleet-mon"
BRIDGE = "br0"
SUBNET = ipaddress.IPv4Network("10.77.0.0/16")
MONITOR_ADDR = "10.77.255.1"
BRIDGE_ADDR = "10.77.255.254"  # the querier's source
INSTANCE_PREFIX = "fleet-"  # sdlab names (cgroups sdlab-fleet-h001, ...)
# Every container's systemd, dbus and logind hold inotify instances (7 when idle, more while
# systemctl runs), all root's: the default limit of 128 stops the 19th container's systemd.
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_PER_HOST = 12
# The kernel's neighbour tables (ARP, NDP) are one per machine, shared by every netns, with a
# hard cap of gc_thresh3 entries (1,024 by default) for all of them together. Every host of the
# mesh answers every other by unicast: N hosts hold about N x (N - 1) ARP entries (2,450 at 50),
# plus a few multicast ones each. Past the cap the kernel cannot make new entries ("neighbor
# table overflow!"): echoes are dropped (ENOBUFS) and so are the hosts' IGMP reports, whose
# multicast neighbour entries it cannot make either, and the snooping bridge forgets the joins.
NEIGH_LIMITS = [Path(f"/proc/sys/net/{family}/neigh/default/gc_thresh{level}")
                for family in ("ipv4", "ipv6") for level in (2, 3)]
NEIGH_PER_HOST_EXTRA = 16  # the monitor, the bridge, multicast entries (groups, reports)


def run(*argv: str, timeout: float = 60, check: bool = True, stdin: Optional[str] = None
        ) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n"
                             f"{done.stdout}{done.stderr}")
    return done


def host_address(index: int) -> str:
    """Host 1 is 10.77.0.1, host 255 is 10.77.1.0 ... (the monitor and bridge sit at .255.x)."""
    return str(SUBNET.network_address + index)


def start_time(pid: int) -> Optional[str]:
    """Field 22 of /proc/PID/stat: with the PID, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Host:
    """One sdlab container, plugged into the bridge as hNNN."""

    def __init__(self, state: Path, name: str, address: str = "") -> None:
        self.state = state
        self.name = name
        self.address = address
        self.pid = 0
        self.env = {**os.environ, "SDLAB_STATE": str(state),
                    "SDLAB_NAME": INSTANCE_PREFIX + self.name}

    def sdlab(self, *args: str, timeout: float = 120,
              check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(SDLAB), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name}: sdlab {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def up(self) -> None:
        self.pid = int(self.sdlab("up", "--no-net").stdout.split()[-1])

    def inside(self, *argv: str, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess:
        return self.sdlab("sh", *argv, timeout=timeout, check=check)

    def plug(self) -> None:
        """Its eth0 on the bridge: a veth created in the switch netns, one end moved in here."""
        run("ip", "-n", NETNS_SWITCH, "link", "add", self.name, "type", "veth",
            "peer", "name", "eth0", "netns", str(self.pid))
        run("ip", "-n", NETNS_SWITCH, "link", "set", self.name, "master", BRIDGE, "up")
        script = (f"ip link set eth0 up multicast on && ip addr add {self.address}/16 dev eth0 && "
                  f"ip route add 224.0.0.0/4 dev eth0 && hostname {self.name} && "
                  f"echo {self.name} > /etc/hostname")
        self.inside("sh", "-c", script)

    def main_pid(self) -> int:
        return int(self.inside("systemctl", "show", "-P", "MainPID", "mcast-echo.service").stdout)

    def down(self) -> str:
        done = self.sdlab("down", check=False)
        if done.returncode != 0 or "down: clean" not in done.stderr:
            raise AssertionError(f"{self.name}: teardown not clean:\n{done.stderr}")
        return done.stderr


class Fleet:
    """The switch, the monitor, N hosts; `close()` takes it all down and proves it gone."""

    def __init__(self, state: Path, count: int) -> None:
        self.state = state
        self.count = count
        width = max(3, len(str(count)))
        self.hosts = [Host(state, f"h{i:0{width}d}", host_address(i)) for i in range(1, count + 1)]
        self.pids_file = state / "pids"  # "PID STARTTIME what" per process started in the monitor

    # ------------------------------------------------------------------ network
    def make_network(self) -> None:
        self._note("netns", NETNS_SWITCH)
        run("ip", "netns", "add", NETNS_SWITCH)
        self._note("netns", NETNS_MONITOR)
        run("ip", "netns", "add", NETNS_MONITOR)
        sw = ("ip", "-n", NETNS_SWITCH)
        run(*sw, "link", "set", "lo", "up")
        # IGMP snooping with the bridge as querier: group traffic goes only to members' ports
        run(*sw, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "1",
            "mcast_querier", "1", "mcast_query_interval", "1000", "stp_state", "0")
        run(*sw, "addr", "add", f"{BRIDGE_ADDR}/16", "dev", BRIDGE)
        run(*sw, "link", "set", BRIDGE, "up")
        run(*sw, "link", "add", "mon", "type", "veth", "peer", "name", "eth0",
            "netns", NETNS_MONITOR)
        run(*sw, "link", "set", "mon", "master", BRIDGE, "up")
        mon = ("ip", "-n", NETNS_MONITOR)
        run(*mon, "link", "set", "lo", "up")
        run(*mon, "link", "set", "eth0", "up", "multicast", "on")
        run(*mon, "addr", "add", f"{MONITOR_ADDR}/16", "dev", "eth0")
        run(*mon, "route", "add", "224.0.0.0/4", "dev", "eth0")

    def snooped_ports(self, group: str) -> int:
        """How many bridge ports the snooping table has *group* on."""
        out = run("bridge", "-n", NETNS_SWITCH, "mdb", "show", "dev", BRIDGE).stdout
        return sum(1 for line in out.splitlines() if f" grp {group} " in line + " ")

    # ------------------------------------------------------------------ hosts
    def raise_limits(self) -> None:
        """Room for every host's inotify instances and for the mesh's neighbour entries, for
        this run (the teardown restores each limit it raised)."""
        self._raise(INOTIFY_LIMIT, 128 + INOTIFY_PER_HOST * self.count)
        entries = self.count * (self.count + NEIGH_PER_HOST_EXTRA)
        for limit in NEIGH_LIMITS:  # gc_thresh2 (soft) the entries, gc_thresh3 (hard) twice
            self._raise(limit, 1024 + entries * (2 if limit.name.endswith("3") else 1))

    def _raise(self, limit: Path, wanted: int) -> None:
        current = int(limit.read_text())
        if current < wanted:
            self._note("sysctl", f"{limit} {current}")
            limit.write_text(str(wanted))

    def boot(self, parallel: int) -> None:
        """Boot every host (`parallel` at a time) and plug it in."""
        for host in self.hosts:
            self._note("sdlab", host.name)
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(Host.up, self.hosts))
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(Host.plug, self.hosts))

    def each(self, fn, hosts: Optional[Iterable[Host]] = None, parallel: int = 8) -> list:
        with ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(fn, self.hosts if hosts is None else hosts))

    # ------------------------------------------------------------------ monitor processes
    def spawn(self, what: str, *argv: str, log: Path) -> subprocess.Popen:
        """Start *argv* in the monitor netns; its PID is noted for the teardown (ours, by PID)."""
        with open(log, "w") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", NETNS_MONITOR, *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self._note("pid", f"{proc.pid} {start_time(proc.pid)} {what}")
        return proc

    def in_monitor(self, *argv: str, timeout: float = 60,
                   check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", NETNS_MONITOR, *argv, timeout=timeout, check=check)

    # ------------------------------------------------------------------ teardown
    def _note(self, kind: str, value: str) -> None:
        with open(self.state / "created", "a") as f:
            f.write(f"{kind} {value}\n")

    def close(self) -> list[str]:
        """Everything down; returns what is left (an empty list when clean)."""
        return teardown(self.state)


def teardown(state: Path) -> list[str]:
    """Take down what the run in *state* created (a live or a killed run): processes it started
    by PID, its sdlab hosts, its namespaces. Returns what is left behind."""
    left: list[str] = []
    created = (state / "created").read_text().splitlines() if (state / "created").exists() else []
    notes = [line.split(" ", 1) for line in created if " " in line]
    for kind, value in notes:  # processes first: SIGTERM, then SIGKILL, each by its own PID
        if kind == "pid":
            pid, started, _what = value.split(" ", 2)
            _end(int(pid), started)
    sdlab_names = [value for kind, value in notes if kind == "sdlab"]
    hosts = [Host(state, name) for name in sdlab_names]
    todo = [h for h in hosts if (state / (INSTANCE_PREFIX + h.name)).is_dir()]
    with ThreadPoolExecutor(8) as pool:
        left.extend(error for error in pool.map(_down_quietly, todo) if error)
    for kind, value in notes:
        if kind == "netns" and Path(f"/run/netns/{value}").exists():
            pids = run("ip", "netns", "pids", value, check=False).stdout.split()
            if pids:
                left.append(f"netns {value}: processes {' '.join(pids)} still in it")
                continue
            run("ip", "netns", "del", value, check=False)
    for kind, value in notes:  # limits raised for the run, back as they were (if still ours)
        if kind == "sysctl" and not left:
            path, original = value.rsplit(" ", 1)
            Path(path).write_text(original)
    for name in (NETNS_SWITCH, NETNS_MONITOR):
        if Path(f"/run/netns/{name}").exists():
            left.append(f"netns {name} still exists")
    mounts = Path("/proc/self/mountinfo").read_text()
    for line in mounts.splitlines():
        if f" {state}/" in line or "/run/netns/mcast-echo-fleet" in line:
            left.append(f"mount: {line}")
    for cg in Path("/sys/fs/cgroup").glob(f"sdlab-{INSTANCE_PREFIX}*"):
        left.append(f"cgroup {cg}")
    return left


def _down_quietly(host: Host) -> str:
    if not (host.state / (INSTANCE_PREFIX + host.name) / "pid").exists() and \
            not (host.state / (INSTANCE_PREFIX + host.name) / "unshare.pid").exists():
        return ""
    try:
        host.down()
    except AssertionError as e:
        return str(e)
    return ""


def _end(pid: int, started: str, grace: float = 5.0) -> None:
    """SIGTERM the process we started (same PID and start time), then SIGKILL after *grace*."""
    if start_time(pid) != started:
        return  # gone, or the PID now belongs to someone else
    os.kill(pid, 15)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if start_time(pid) != started:
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    os.kill(pid, 9)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def down_leftovers(parent: Path) -> None:
    """Tear down what runs killed before their teardown left under *parent* (run-*/owner)."""
    for state in sorted(parent.glob("run-*")):
        try:
            owner = int((state / "owner").read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and Path(f"/proc/{owner}").exists():
            raise SystemExit(f"fleet-test: another run (pid {owner}) is using {state}")
        print(f"fleet-test: tearing down what a killed run left in {state}")
        left = teardown(state)
        if left:
            raise SystemExit("fleet-test: leftovers not removable:\n  " + "\n  ".join(left))
        shutil.rmtree(state)
