"""Tools for abuse, load and fault tests: a notify sink that reads STATUS, floods, forged sources.

Everything here runs inside the private namespaces netlab makes; nothing reaches the
machine's real interfaces. Every loop is bounded by a count and by a deadline.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

from netlab import ClosedOnExit, Host, ip, unplug, veth
from waiting import wait_until

TESTS = Path(__file__).resolve().parent
FLOOD = TESTS / "flood.py"


class NotifySink:
    """systemd's side of NOTIFY_SOCKET, on a *path*: reachable from every network namespace.

    (An abstract socket name belongs to one network namespace, so a daemon inside a
    netlab Host could not reach one made by the test.)
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)  # a daemon run as nobody must be able to send
        self.last_status: Optional[str] = None

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.path}

    def receive(self, timeout: float = 5) -> dict[str, str]:
        self.sock.settimeout(max(timeout, 0.001))
        data = self.sock.recv(65536)
        fields = dict(line.split("=", 1) for line in data.decode("utf-8").splitlines()
                      if "=" in line)
        if "STATUS" in fields:
            self.last_status = fields["STATUS"]
        return fields

    def wait(self, predicate: Callable[[dict[str, str]], bool], timeout: float = 5,
             what: str = "a notify message") -> dict[str, str]:
        """The first message that satisfies *predicate*; fails after *timeout*."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout} s; saw {seen[-5:]}")
            try:
                fields = self.receive(left)
            except socket.timeout:
                continue
            seen.append(fields)
            if predicate(fields):
                return fields

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(65536)
                for line in data.decode("utf-8").splitlines():
                    if line.startswith("STATUS="):
                        self.last_status = line[len("STATUS="):]
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


_COUNTS = re.compile(r"received (\d+), echoed (\d+), dropped (\d+)(?: \(([^)]*)\))?")


def parse_status(text: str) -> dict[str, int]:
    """{'received': n, 'echoed': n, 'dropped': n, '<reason>': n, ...} from one STATUS line."""
    match = _COUNTS.search(text)
    if match is None:
        raise AssertionError(f"no counters in STATUS {text!r}")
    counts = {"received": int(match[1]), "echoed": int(match[2]), "dropped": int(match[3])}
    for part in (match[4] or "").split(", "):
        if part:
            reason, number = part.rsplit(" ", 1)
            counts[reason] = int(number)
    return counts


def counters(daemon, sink: NotifySink, timeout: float = 5) -> dict[str, int]:
    """The daemon's counters right now: a SIGHUP with the same file makes it send READY=1 with
    a fresh STATUS (and logs 'reloaded:'), so we need not wait for the STATUS timer."""
    import signal

    sink.drain()
    daemon.send_signal(signal.SIGHUP)
    fields = sink.wait(lambda f: "READY" in f, timeout, "READY=1 after SIGHUP")
    return parse_status(fields["STATUS"])


def settled_counters(daemon, sink: NotifySink, timeout: float = 5) -> dict[str, int]:
    """The daemon's counters once it has caught up with what was sent: two readings in a row
    that agree (nothing was read or answered between them)."""
    readings = [counters(daemon, sink, timeout)]

    def agree() -> bool:
        readings.append(counters(daemon, sink, timeout))
        return readings[-1] == readings[-2]

    wait_until(agree, timeout, "two equal readings of the counters")
    return readings[-1]


def ifname_of(address: str, host: Optional[Host] = None) -> str:
    """The interface that holds *address* (in the test's namespace, or in *host*)."""
    out = ip("-o", "-4", "addr", "show", "to", address, host=host).split()
    if len(out) < 2:
        raise AssertionError(f"no interface holds {address}")
    return out[1]


def add_address(ifname: str, cidr: str, host: Optional[Host] = None) -> None:
    ip("addr", "add", cidr, "dev", ifname, host=host)


def flood(host: Optional[Host], group: str, port: int, source: str, seconds: float,
          count: int = 50_000_000, sizes: str = "64", read_echoes: bool = True,
          probes: bool = False) -> subprocess.Popen:
    """A tests/flood.py process sending to group:port from *source* at full speed.

    Its stdout ends with one JSON line of counts (sent, send_errors, echoes, ...).
    """
    cmd = [sys.executable, str(FLOOD), "--group", group, "--port", str(port),
           "--source", source, "--seconds", str(seconds), "--count", str(count),
           "--sizes", sizes]
    if not read_echoes:
        cmd.append("--no-read")
    if probes:
        cmd.append("--probes")
    popen = host.popen if host is not None else subprocess.Popen
    return popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 stdin=subprocess.DEVNULL)


def flood_result(proc: subprocess.Popen, timeout: float = 30) -> dict:
    import json

    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"flood exited {proc.returncode}: {err}")
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------ forged sources

def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def udp_packet(source: str, sport: int, dest: str, dport: int, payload: bytes) -> bytes:
    """An IPv4 + UDP packet for a raw IP_HDRINCL socket (UDP checksum 0: none, legal on IPv4)."""
    length = 20 + 8 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, 0, 0, 1, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(source), socket.inet_aton(dest))
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


class ForgedSender(ClosedOnExit):
    """Sends UDP datagrams with any source address (a raw socket, IP_HDRINCL).

    The multicast route of the namespace it runs in picks the interface, so the
    datagrams reach the responder host like any other. To receive the echoes, route
    the forged range as local here (``ip route add local 100.64.0.0/10 dev lo``) and
    give the responder host a route back (a default route via this end of the veth).
    """

    def __init__(self, out_address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                             socket.inet_aton(out_address))
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    def send(self, source: str, sport: int, group: str, port: int, payload: bytes) -> None:
        self.sock.sendto(udp_packet(source, sport, group, port, payload), (group, 0))

    def close(self) -> None:
        self.sock.close()



def nth_address(base: str, n: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", socket.inet_aton(base))[0] + n))


@functools.cache
def readable_runtime() -> str:
    """A world-readable copy of our package and the libraries it imports.

    A checkout (and its .venv) may sit below a directory only root can enter (CI
    clones into a mode-700 temporary directory), so a process run as nobody could
    import nothing from it. It gets this copy on PYTHONPATH instead.
    """
    root = tempfile.mkdtemp(prefix="mcast-echo-runtime-")
    atexit.register(shutil.rmtree, root, True)
    for name in ("mcast_echo", "yaml", "_yaml", "sdnotify", "daemon", "lockfile"):
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            source = list(spec.submodule_search_locations)[0]
            shutil.copytree(source, os.path.join(root, name),
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif spec.origin:
            shutil.copy(spec.origin, root)
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    return root


def can_become_another_user() -> bool:
    """True for the real root. Under `make test`'s `unshare -rn` (a user who is not root) we
    look like root, but only our own uid is mapped: there is no other user to become, and
    no file we own is unreadable to us."""
    if os.geteuid() != 0:
        return False
    with open("/proc/self/uid_map") as f:
        return f.read().split()[:3] == ["0", "0", "4294967295"]


needs_another_user = pytest.mark.skipif(
    not can_become_another_user(),
    reason="needs the real root to run a process as another user (e.g. a mode-000 file)")


class AsUser:
    """Stands in for a netlab Host in DaemonProcess: runs the command there as another user.

    Our interpreter (``sys.executable``) is swapped for the real one behind the venv,
    with ``readable_runtime()`` on PYTHONPATH, so the other user can run it. Where no
    other user can be had (see can_become_another_user) the command runs as we are.
    """

    def __init__(self, host: Optional[Host], uid: int = 65534, gid: int = 65534) -> None:
        self.host = host
        self.prefix = (["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
                       if can_become_another_user() else [])

    def command(self, cmd: list[str]) -> list[str]:
        if cmd and cmd[0] == sys.executable:
            cmd = [os.path.realpath(sys.executable), "-s", *cmd[1:]]
        return self.prefix + cmd

    @staticmethod
    def environ(env: Optional[dict] = None) -> dict:
        return {**(os.environ if env is None else env), "PYTHONPATH": readable_runtime()}

    def popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        kw["env"] = self.environ(kw.get("env"))
        if self.host is not None:
            return self.host.popen(self.command(cmd), **kw)
        return subprocess.Popen(self.command(cmd), **kw)


class EchoLab(ClosedOnExit):
    """For the scripts (soak, bench): a responder host on a veth, *sources* local addresses to
    send from, a config, a notify sink and the daemon. A context manager; cleans up after."""

    def __init__(self, name: str, subnet: str, config: str, sources: int = 4) -> None:
        import tempfile

        from daemonproc import DaemonProcess

        self._tmp = tempfile.TemporaryDirectory(prefix=f"mcast-echo-{name}-")
        self.host = Host(name)
        self.local_if = f"v{name}"[:15]
        self.remote = f"{subnet}.2"
        veth(self.local_if, f"{subnet}.1/24", self.host, "eth0", f"{self.remote}/24")
        self.sources = [f"{subnet}.1"] + [f"{subnet}.{10 + i}" for i in range(1, sources)]
        for address in self.sources[1:]:
            add_address(self.local_if, f"{address}/24")
        self.config = Path(self._tmp.name) / "mcast-echo.yaml"
        self.config.write_text(config)
        self.sink = NotifySink(Path(self._tmp.name) / "notify.sock")
        self.daemon = DaemonProcess(self.config, host=self.host, env=self.sink.env)
        self.sink.wait(lambda f: "READY" in f, 10, "READY=1")

    def close(self) -> None:
        self.daemon.kill()
        self.sink.close()
        unplug(self.local_if)
        self.host.close()
        self._tmp.cleanup()



def require_private_netns() -> None:
    """Scripts refuse to run where multicast could reach a real network (as conftest does)."""
    from netlab import in_fresh_netns

    if not in_fresh_netns():
        print("run this in a private network namespace: use the make target "
              "(it wraps the script in `unshare --net`)", file=sys.stderr)
        raise SystemExit(2)
    ip("link", "set", "lo", "up")
