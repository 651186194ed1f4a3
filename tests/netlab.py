"""Private test networks: hosts are network namespaces the test suite makes itself.

The whole pytest run already lives in a private network namespace (``make test``
wraps it in ``unshare --net``); this module adds further "hosts" — each a
namespace held open by a sleeping ``unshare --net --uts`` process — and wires
them with veth pairs, optionally onto a bridge in the test's own namespace.
Nothing here touches the machine's real interfaces. The shapes tests ask for most:
``cabled_host`` (a host on a cable, IPv4 or dual stack) and ``ScriptOnLan`` (a host on
a bridge running one script, a responder of the test's own).

Works as root and inside ``unshare -rn`` (a user namespace): it needs only
``unshare``, ``nsenter`` and ``ip``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator, Optional, TypeVar

from waiting import wait_until

# Every host gets a route for the whole multicast range on its LAN interface,
# so "the kernel's route to the group" exists without a default route.
MULTICAST_RANGE = "224.0.0.0/4"


Closable = TypeVar("Closable", bound="ClosedOnExit")


class ClosedOnExit:
    """A context manager for what has close(): the block's end closes it."""

    def __enter__(self: Closable) -> Closable:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def own_netns() -> str:
    return os.readlink("/proc/self/ns/net")


def in_fresh_netns() -> bool:
    """True when this process sits in a network namespace that holds nothing but ``lo``.

    That is what ``unshare --net`` gives; a machine's real namespace always has
    more, so the check cannot pass where multicast could reach a real network.
    """
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    return names == ["lo"]


def ip(*args: str, host: Optional[Host] = None) -> str:
    cmd = ["ip", *args]
    if host is not None:
        cmd = host.wrap(cmd)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


class Host(ClosedOnExit):
    """A network namespace (with its own host name) that stands for one machine."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._holder = subprocess.Popen(
            ["unshare", "--net", "--uts", "--", "sh", "-c",
             f"hostname {name} && ip link set lo up && exec sleep 3600"],
            stdin=subprocess.DEVNULL,
        )
        self.pid = self._holder.pid
        try:
            wait_until(self._ready, 5, f"namespace ready for host {name}")
        except AssertionError as e:
            self.close()
            raise RuntimeError(f"host {name}: {e}") from None

    def _ready(self) -> bool:
        """The holder sleeps in a namespace of its own; RuntimeError if it exited instead."""
        try:
            if os.readlink(f"/proc/{self.pid}/ns/net") != own_netns() and self._comm() == "sleep":
                return True
        except FileNotFoundError:
            pass
        if self._holder.poll() is not None:
            raise RuntimeError(f"host {self.name}: unshare exited {self._holder.returncode}")
        return False

    def _comm(self) -> str:
        with open(f"/proc/{self.pid}/comm") as f:
            return f.read().strip()

    def wrap(self, cmd: list[str]) -> list[str]:
        """The command line that runs *cmd* inside this host (nsenter execs: same pid)."""
        return ["nsenter", "-t", str(self.pid), "-n", "-u", "--", *cmd]

    def run(self, cmd: list[str], check: bool = True, timeout: float = 30,
            **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.wrap(cmd), check=check, timeout=timeout,
                              capture_output=True, text=True, **kw)

    def popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.wrap(cmd), **kw)

    def python(self, code: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-c", code], timeout=timeout)

    def igmp_groups(self) -> list[tuple[str, str]]:
        """(interface, group) pairs from this host's /proc/net/igmp."""
        return parse_proc_net_igmp(self.run(["cat", "/proc/net/igmp"]).stdout)

    def close(self) -> None:
        if self._holder.poll() is None:
            self._holder.kill()
        self._holder.wait()



def parse_proc_net_igmp(text: str) -> list[tuple[str, str]]:
    pairs, ifname = [], ""
    for line in text.splitlines()[1:]:
        if not line.startswith("\t"):
            ifname = line.split()[1]
        else:
            hexaddr = line.split()[0]
            # /proc prints the address as a host-order (little-endian here) 32-bit number
            octets = bytes.fromhex(hexaddr)[::-1]
            pairs.append((ifname, ".".join(str(o) for o in octets)))
    return pairs


def local_igmp_groups() -> list[tuple[str, str]]:
    with open("/proc/net/igmp") as f:
        return parse_proc_net_igmp(f.read())


def configure(ifname: str, addr: str, host: Optional[Host] = None) -> None:
    """Address an interface, bring it up and route the multicast range through it."""
    ip("addr", "add", addr, "dev", ifname, host=host)
    ip("link", "set", ifname, "up", "multicast", "on", host=host)
    ip("route", "replace", MULTICAST_RANGE, "dev", ifname, host=host)


def veth(local_if: str, local_addr: str, peer: Host, peer_if: str, peer_addr: str) -> None:
    """A cable between the test's namespace and *peer*, both ends addressed and up."""
    ip("link", "add", local_if, "type", "veth", "peer", "name", peer_if, "netns", str(peer.pid))
    configure(local_if, local_addr)
    configure(peer_if, peer_addr, host=peer)


class Lan(ClosedOnExit):
    """A bridge in the test's namespace: a switch that hosts plug into (IGMP snooping off)."""

    _count = 0

    def __init__(self, subnet: str = "10.77.0", local_addr: Optional[int] = 1) -> None:
        Lan._count += 1
        self.bridge = f"tbr{Lan._count}"
        self.subnet = subnet
        ip("link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0")
        if local_addr is not None:
            configure(self.bridge, f"{subnet}.{local_addr}/24")
        else:
            ip("link", "set", self.bridge, "up")
        self._ports: list[str] = []

    def plug(self, host: Host, octet: int, ifname: str = "eth0") -> str:
        """Give *host* an interface *ifname* on this LAN at subnet.octet; returns its address."""
        port = f"{self.bridge}p{octet}"
        addr = f"{self.subnet}.{octet}"
        ip("link", "add", port, "type", "veth", "peer", "name", ifname, "netns", str(host.pid))
        ip("link", "set", port, "master", self.bridge)
        ip("link", "set", port, "up")
        configure(ifname, f"{addr}/24", host=host)
        self._ports.append(port)
        return addr

    def close(self) -> None:
        for port in self._ports:
            unplug(port)
        unplug(self.bridge)



class ScriptOnLan(ClosedOnExit):
    """Host *name* on a LAN of its own (the test's namespace is .1 on the bridge, the host
    .*octet* on eth0), running one Python script that prints "ready" once it serves. With
    *v6* ("fd77:" say), IPv6 too: {v6}:1 here, {v6}:*octet* there, every address usable at
    once. Closing kills the script, then the host and the LAN."""

    def __init__(self, name: str, octet: int, script: str, *args: str,
                 v6: Optional[str] = None) -> None:
        if v6 is not None:
            no_dad()
        self.lan = Lan()
        self.host: Optional[Host] = None
        self.proc: Optional[subprocess.Popen] = None
        try:
            self.host = Host(name)
            if v6 is not None:
                no_dad(self.host)
            self.lan.plug(self.host, octet)
            if v6 is not None:
                ip("-6", "addr", "add", f"{v6}:1/64", "dev", self.lan.bridge, "nodad")
                ip("-6", "addr", "add", f"{v6}:{octet}/64", "dev", "eth0", "nodad", host=self.host)
            self.proc = self.host.popen([sys.executable, "-c", script, *args],
                                        stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout.readline().strip() == "ready", f"{name}: no 'ready'"
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        if self.host is not None:
            self.host.close()
        self.lan.close()



def no_dad(host: Optional[Host] = None) -> None:
    """IPv6 addresses usable at once (no duplicate address detection) in a namespace."""
    for name in ("all", "default"):
        cmd = ["sysctl", "-qw", f"net.ipv6.conf.{name}.accept_dad=0"]
        if host is None:
            subprocess.run(cmd, check=True)
        else:
            host.run(cmd)


def dual_stack_veth(local_if: str, peer: Host, v4: str, v6: str) -> None:
    """A cable to *peer*'s eth0 with IPv4 {v4}.1 / .2 and IPv6 {v6}::1 / ::2 (/24, /64), the
    IPv6 ones usable at once; call no_dad() on both ends before, so link-local ones are too."""
    veth(local_if, f"{v4}.1/24", peer, "eth0", f"{v4}.2/24")
    ip("-6", "addr", "add", f"{v6}::1/64", "dev", local_if, "nodad")
    ip("-6", "addr", "add", f"{v6}::2/64", "dev", "eth0", "nodad", host=peer)


def unplug(ifname: str) -> None:
    """Delete a link of the test's namespace, if it is still there (a veth's peer goes too)."""
    subprocess.run(["ip", "link", "del", ifname], capture_output=True)


@contextmanager
def cabled_host(name: str, local_if: str, v4: str, v6: Optional[str] = None) -> Iterator[Host]:
    """A Host cabled to the test's namespace, *local_if* here to eth0 there: IPv4 {v4}.1 here
    and {v4}.2 there; with *v6*, IPv6 {v6}::1 / ::2 too, every address usable at once. The
    cable is deleted when the block ends, the host closed."""
    if v6 is not None:
        no_dad()
    try:
        with Host(name) as host:
            if v6 is None:
                veth(local_if, f"{v4}.1/24", host, "eth0", f"{v4}.2/24")
            else:
                no_dad(host)
                dual_stack_veth(local_if, host, v4, v6)
            yield host
    finally:
        unplug(local_if)


@contextmanager
def dual_stack_lab(name: str, local_if: str, v4: str, v6: str) -> Iterator[tuple]:
    """cabled_host with both families, as the echo tests' `lab` fixtures yield it:
    (host, local_if, (v4 here, v4 there), (v6 here, v6 there))."""
    with cabled_host(name, local_if, v4, v6) as host:
        yield host, local_if, (f"{v4}.1", f"{v4}.2"), (f"{v6}::1", f"{v6}::2")

