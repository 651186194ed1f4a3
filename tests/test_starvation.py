"""One peer can never take the echo away from the others (issue 18, item 2).

A forged on-link source -- an address in the subnet that no host holds -- sends probes
inside the default rate limit. Every echo to it waits in the responder host's neighbour
(ARP / ND) queue for a resolution that never comes, and each waiting echo stays charged to
the listener socket's send buffer: before the send guard (daemon/sendguard.py), 1,000
probes/s of 16 B filled it within a quarter second, and a legitimate client got 34-37 of
its 300 echoes (0 of 300 after a burst of 500 first); ssmping replies alike. After: 300.

The daemon runs in a netlab Host; the legitimate client and the attacker share the test's
namespace, the other end of the cable (another host on the same subnet). The attacker
sends from the forged address with IP_TRANSPARENT. Every loop is bounded by a count and
a deadline.
"""

from __future__ import annotations

import errno
import re
import select
import socket
import subprocess
import sys
import time

import pytest

from daemonproc import DaemonProcess
from loadlab import NotifySink, counters
from mcast_echo.daemon import sendguard
from mcast_echo.net import neigh
from mcast_echo.wire import ssmping
from netlab import cabled_host, ip, no_dad, unplug
from waiting import wait_until

PORT = 5200
ATTACK_RATE = 1000  # probes/s: the default rate_limit lets every one through
ATTACK_SECONDS = 3.5
ATTACK_BURST = 500  # datagrams at once first: the default rate limit allows bursts of 2,000
LEGIT_PROBES = 300
LEGIT_RATE = 150  # probes/s: two seconds of them, all while the attack runs
_labs = 0

# The attacker: one datagram again and again from an address no host holds, to a group or
# (ssmping) to the responder's address, paced in bursts of 10.
ATTACKER = """
import socket, struct, sys, time
family, forged, group, port, rate, seconds, ifname, payload, burst = sys.argv[1:10]
payload = bytes.fromhex(payload)
ipv6 = family == "6"
sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
if ipv6:
    sock.setsockopt(socket.IPPROTO_IPV6, 75, 1)  # IPV6_TRANSPARENT
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(ifname))
else:
    sock.setsockopt(socket.IPPROTO_IP, 19, 1)  # IP_TRANSPARENT
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("=4s4si", bytes(4),
                    bytes(4), socket.if_nametoindex(ifname)))
sock.bind((forged, 40000))
step = 10 / float(rate)
start = time.monotonic()
deadline = start + float(seconds)
sent = 0
for _ in range(int(burst)):  # at once: the rate limit's burst lets them all through
    try:
        sock.sendto(payload, (group, int(port)))
        sent += 1
    except OSError:
        pass
start -= sent / float(rate)
while time.monotonic() < deadline and sent < 100000:
    for _ in range(10):
        try:
            sock.sendto(payload, (group, int(port)))
            sent += 1
        except OSError:
            pass
    pause = start + (sent // 10) * step - time.monotonic()
    if pause > 0:
        time.sleep(pause)  # the pace of the attack: a stimulus
print(sent, flush=True)
"""


@pytest.fixture
def lab():
    """The responder host on a cable: IPv4 10.69.N.1 (here) <-> .2, IPv6 fd69:N::1 <-> ::2."""
    global _labs
    _labs += 1
    local_if = f"vs{_labs}"
    with cabled_host(f"starve{_labs}", local_if, f"10.69.{_labs}", f"fd69:{_labs}") as host:
        yield host, local_if, _labs


def legit_client(ipv6: bool, local: str, ifname: str) -> socket.socket:
    if ipv6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF,
                        socket.if_nametoindex(ifname))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.bind((local, 0))
    sock.setblocking(False)
    return sock


def probe_paced(sock: socket.socket, destination: tuple, count: int, rate: float,
                request=lambda n: b"legit %08d" % n) -> int:
    """Send *count* numbered requests at *rate*/s; how many distinct answers came back."""
    echoed: set[bytes] = set()

    def collect() -> None:
        while True:
            try:
                echoed.add(sock.recv(2048))
            except BlockingIOError:
                return

    start = time.monotonic()
    for n in range(count):
        sock.sendto(request(n), destination)
        collect()
        pause = start + (n + 1) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # the pace of the probes: a stimulus
    linger = time.monotonic() + 0.5  # echoes still on their way
    while len(echoed) < count and select.select([sock], [], [],
                                                max(0.0, linger - time.monotonic()))[0]:
        collect()
    return len(echoed)


def ssmping_request(n: int) -> bytes:
    return ssmping.build_request(4242, n, time.time_ns(), ssmping.DEFAULT_GROUPS[4])


@pytest.mark.parametrize("family, service, burst", [
    ("ipv4", "echo", 0), ("ipv4", "echo", ATTACK_BURST), ("ipv6", "echo", ATTACK_BURST),
    ("ipv4", "ssmping", ATTACK_BURST)])
def test_a_forged_unresolved_source_does_not_starve_other_clients(lab, write_config, sink,
                                                                   family, service, burst):
    """1,000/s from the forged source (after *burst* at once), 150/s from the real client."""
    host, local_if, n = lab
    ipv6 = family == "ipv6"
    if ipv6:
        group, local, remote, forged = ("ff15::4242", f"fd69:{n}::1", f"fd69:{n}::2",
                                        f"fd69:{n}::99")
    else:
        group, local, remote, forged = ("239.69.0.1", f"10.69.{n}.1", f"10.69.{n}.2",
                                        f"10.69.{n}.99")
    if service == "ssmping":  # unicast requests to the listener, replies unicast (and group)
        destination, request = (remote, ssmping.PORT), ssmping_request
    else:
        destination, request = (group, PORT), (lambda n: b"legit %08d" % n)
    daemon = DaemonProcess(write_config(f"group: {group}\nport: {PORT}\ninterface: eth0\n"
                                        "ssmping: {}\n"), host=host, env=sink.env)
    attacker = None
    try:
        daemon.wait_for("ready:")
        with legit_client(ipv6, local, local_if) as sock:
            # the responder knows the legitimate client before the attack, as on a real LAN
            assert probe_paced(sock, destination, 5, 50, request) == 5, daemon.log
            attacker = subprocess.Popen(
                [sys.executable, "-c", ATTACKER, "6" if ipv6 else "4", forged, destination[0],
                 str(destination[1]), str(ATTACK_RATE), str(ATTACK_SECONDS), local_if,
                 request(0)[:16].hex() if service == "echo" else request(0).hex(),
                 str(burst)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_until(lambda: forged in ip("neigh", "show", "dev", "eth0", host=host), 5)
            answered = probe_paced(sock, destination, LEGIT_PROBES, LEGIT_RATE, request)
            attack_out, attack_err = attacker.communicate(timeout=ATTACK_SECONDS + 10)
        neighbours = ip("neigh", "show", "dev", "eth0", host=host)
        counts = counters(daemon, sink) if service == "echo" else ssmping_counts(daemon, sink)
        print(f"{family} {service} burst {burst}: legit {answered}/{LEGIT_PROBES}, attacker sent "
              f"{attack_out.strip()}; counts {counts}; neighbours:\n{neighbours}")
        assert attacker.returncode == 0, attack_err
        assert int(attack_out) >= ATTACK_RATE, "the attacker did not run"
        assert answered >= LEGIT_PROBES * 9 // 10, (answered, counts, daemon.log[-3000:])
        assert counts.get("unresolved", 0) > 0, counts  # the guard, not luck, kept them
    finally:
        if attacker is not None and attacker.poll() is None:
            attacker.kill()
            attacker.wait()
        daemon.kill()


def ssmping_counts(daemon: DaemonProcess, sink: NotifySink) -> dict[str, int]:
    """The ssmping listener's counts from a fresh STATUS ('..., dropped unresolved N')."""
    import signal

    sink.drain()
    daemon.send_signal(signal.SIGHUP)
    status = sink.wait(lambda f: "READY" in f, 5, "READY=1 after SIGHUP")["STATUS"]
    found = re.search(r"ssmping :\d+: (.*)", status)
    assert found, status
    return {name: int(number) for name, number in
            re.findall(r"([a-z][a-z -]*?) (\d+)", found[1].replace("dropped ", ""))}


# ------------------------------------------------------------------ the guard itself

@pytest.fixture
def cable():
    """A veth pair in the test's namespace: 10.70.0.1/24 and fd70::1/64 on one end, the
    other end up with no address, so nothing else on the subnet ever resolves."""
    no_dad()
    ip("link", "add", "vg0", "type", "veth", "peer", "name", "vg1")
    ip("addr", "add", "10.70.0.1/24", "dev", "vg0")
    ip("-6", "addr", "add", "fd70::1/64", "dev", "vg0", "nodad")
    ip("link", "set", "vg0", "up")
    ip("link", "set", "vg1", "up")
    yield
    unplug("vg0")


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_the_guard_holds_back_a_parked_destination_and_stays_bounded(cable, monkeypatch,
                                                                     family):
    ipv6 = family == socket.AF_INET6
    target = "fd70::99" if ipv6 else "10.70.0.99"
    guard = sendguard.SendGuard()
    watch = sendguard.SendWatch()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        parked = 0
        for _ in range(2000):  # until the send buffer is full, as under the attack
            try:
                sock.sendto(b"forged-16-bytes!", (target, 9))
                parked += 1
            except BlockingIOError:
                break
        assert parked < 2000, "the echoes to an unresolved address did not park"
        entries = neigh.unresolved(family)
        assert [e.failed for e in entries
                if e.address == socket.inet_pton(family, target)] == [False], entries
        now = time.monotonic()
        guard.look(sock, watch, parked, ipv6, now)  # after a burst: held back at once, briefly
        key = sendguard.source_key(target)
        assert guard.unresolved(ipv6) == {key: now + sendguard.SHORT_HOLD}
        assert watch.check_echoed == parked + sendguard.CHECK_EVERY
        assert not guard.unresolved(not ipv6)

        def held_for_long() -> bool:  # for long once MIN_AGE
            nonlocal now  # the checks below go on from the last one
            now = time.monotonic()
            guard.check(sock, watch, ipv6, now)
            assert watch.check_at == now + sendguard.CHECK_INTERVAL
            return guard.unresolved(ipv6)[key] >= now + sendguard.PENALTY

        wait_until(held_for_long, 2, f"PENALTY hold of {target}", step=0.02)
        assert watch.pressure == sock.getsockopt(socket.SOL_SOCKET,
                                                 socket.SO_SNDBUF) // sendguard.PRESSURE

        # however many entries the kernel reports, the table keeps MAX_TRACKED
        size = 16 if ipv6 else 4
        many = [neigh.Unresolved(n.to_bytes(size, "big"), True, 0.0)
                for n in range(1, sendguard.MAX_TRACKED + 500)]
        monkeypatch.setattr(neigh, "unresolved", lambda _: many)
        guard.check(sock, watch, ipv6, now + 1)
        assert len(guard.unresolved(ipv6)) == sendguard.MAX_TRACKED
        guard.check(sock, watch, ipv6, now + 2 + sendguard.PENALTY)  # renewed, then expired
        assert len(guard.unresolved(ipv6)) == sendguard.MAX_TRACKED
        monkeypatch.setattr(neigh, "unresolved", lambda _: [])
        guard.check(sock, watch, ipv6, now + 4 + 2 * sendguard.PENALTY)
        assert not guard.unresolved(ipv6)


def test_without_netlink_the_guard_says_so_once_and_stays_off(cable, monkeypatch, caplog):
    calls = []

    def refused(family: int) -> list:
        calls.append(family)
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr(neigh, "unresolved", refused)
    guard = sendguard.SendGuard()
    watch = sendguard.SendWatch()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for _ in range(200):  # parked: the queue is over the pressure mark
            sock.sendto(b"forged-16-bytes!", ("10.70.0.98", 9))
        now = time.monotonic()
        for step in range(3):
            guard.check(sock, watch, False, now + step)
    assert calls == [socket.AF_INET]  # tried once, then off
    warnings = [r.getMessage() for r in caplog.records if "send guard off" in r.getMessage()]
    assert len(warnings) == 1 and "AF_NETLINK" in warnings[0], warnings
    assert not guard.unresolved(False)
