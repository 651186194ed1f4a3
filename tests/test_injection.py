"""An echo never goes to a source that cannot be a real peer (issue 12, item 1).

The kernel accepts IP source 0.0.0.0 on link-local groups (224.0.0.0/24). Before this
rule, one Ethernet frame from a LAN peer (source 0.0.0.0, UDP source port 5555) made the
responder ``sendto(("0.0.0.0", 5555))``, which Linux delivers to a service on
127.0.0.1:5555 of the responder's own host, as if from 127.0.0.1.

The frame is built by hand and sent with AF_PACKET on the test's end of a veth pair,
inside the suite's private namespaces; nothing leaves the machine.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import NamedTuple, Optional

import pytest

from clients import echo, sender
from daemonproc import DaemonProcess
from loadlab import (
    ForgedSender,
    NotifySink,
    ifname_of,
    parse_status,
    settled_counters,
    udp_packet,
)
from mcast_echo.daemon.policy import Policy
from mcast_echo.wire import ssmping
from netlab import Host, cabled_host, ip, no_dad
from waiting import wait_until

GROUP = "224.0.0.250"  # link-local, and no protocol's: an operator may mean it
PORT = 9999
VICTIM_PORT = 5555

# In the responder's host: a loopback service that counts what reaches it.
VICTIM = f"""
import select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {VICTIM_PORT}))
print("listening", flush=True)
got = []
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    if select.select([s], [], [], 0.1)[0]:
        data, source = s.recvfrom(2048)
        got.append(source[0])
print(len(got), ",".join(got), flush=True)
"""


def multicast_mac(group: str) -> bytes:
    low = socket.inet_aton(group)[1:]
    return bytes([0x01, 0x00, 0x5E, low[0] & 0x7F, low[1], low[2]])


def send_frame(ifname: str, source: str, sport: int, group: str, port: int,
               payload: bytes) -> None:
    """One Ethernet frame carrying a UDP datagram with any IP source, 0.0.0.0 included."""
    link = ip("-o", "link", "show", "dev", ifname).split()
    own_mac = bytes.fromhex(link[link.index("link/ether") + 1].replace(":", ""))
    frame = (multicast_mac(group) + own_mac + b"\x08\x00"
             + udp_packet(source, sport, group, port, payload))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((ifname, 0))
        raw.send(frame)


def test_a_frame_from_0_0_0_0_is_not_echoed_into_loopback(responder_host, write_config, sink):
    host, local, remote = responder_host
    daemon = DaemonProcess(write_config(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n"),
                           host=host, env=sink.env)
    victim = host.popen(["python3", "-c", VICTIM, "1.5"], stdout=-1, text=True)
    try:
        daemon.wait_for("ready:")
        assert victim.stdout.readline().strip() == "listening"
        with sender(local) as sock:  # the daemon answers a real peer on this group
            reply = echo(sock, b"data", GROUP, PORT, timeout=2)
            assert reply is not None and reply[0] == b"data", daemon.log
        for _ in range(3):
            send_frame(ifname_of(local), "0.0.0.0", VICTIM_PORT, GROUP, PORT, b"inject")
        counts = settled_counters(daemon, sink)
        out, _ = victim.communicate(timeout=10)
        assert out.strip() == "0", f"the loopback service received {out.strip()!r}"
        assert counts["received"] == 4 and counts["echoed"] == 1, counts
        assert counts.get("source") == 3, counts
        daemon.wait_for("cannot be a real peer")
    finally:
        victim.kill()
        daemon.kill()


@pytest.mark.parametrize("source", [
    "0.0.0.0", "0.1.2.3", "127.0.0.1", "127.255.255.254", "224.0.0.1", "239.1.2.3",
    "240.0.0.1", "255.255.255.255"])
def test_impossible_sources_are_refused_before_the_acl_and_rate_limit(source):
    policy = Policy(ipv6=False, allow=None, rate_limit=None)
    assert policy.verdict((source, 5000), None, 0.0) == "source"
    on_lo = Policy(ipv6=False, allow=None, rate_limit=None)
    on_lo.loopback_peers = True  # joined on lo: this host's own clients are real peers
    expected = None if source.startswith("127.") else "source"
    assert on_lo.verdict((source, 5000), None, 0.0) == expected


@pytest.mark.parametrize("source", ["1.0.0.0", "10.0.0.1", "126.255.255.255", "128.0.0.1",
                                    "169.254.1.1", "223.255.255.255"])
def test_real_peers_pass(source):
    policy = Policy(ipv6=False, allow=None, rate_limit=None)
    assert policy.verdict((source, 5000), None, 0.0) is None
    assert policy.verdict((source, 0), None, 0.0) == "source"  # but never from port 0


def test_own_ipv6_addresses_are_forged_unless_they_came_over_lo():
    """The rule itself, with this namespace's addresses: a global one from any interface but
    lo, a link-local one only from its own interface."""
    ip("link", "add", "ownrule0", "type", "veth", "peer", "name", "ownrule1")
    try:
        no_dad()
        ip("link", "set", "ownrule0", "up")
        ip("-6", "addr", "add", "fd73::1/64", "dev", "ownrule0", "nodad")
        ip("-6", "addr", "add", "fe80::73/64", "dev", "ownrule0", "nodad")
        index = socket.if_nametoindex("ownrule0")
        policy = Policy(ipv6=True, allow=None, rate_limit=None)
        now = time.monotonic() + 10  # past any earlier look
        assert policy.verdict(("fd73::1", 5000, 0, 0), index, now) == "own-address"
        assert policy.verdict(("fd73::1", 5000, 0, 0), None, now) == "own-address"
        assert policy.verdict(("fd73::1", 5000, 0, 0), 1, now) is None  # lo: a local client
        assert policy.verdict(("fd73::2", 5000, 0, 0), index, now) is None
        assert policy.verdict(("fe80::73", 5000, 0, index), index, now) == "own-address"
        assert policy.verdict(("fe80::73", 5000, 0, index + 1), index + 1, now) is None
        assert policy.verdict(("fd73::2", 0, 0, 0), index, now) == "source"
    finally:
        ip("link", "del", "ownrule0")


# ------------------------------------------------------------------ forged with this host's own
# address (issue 18, item 1) and from source port 0 (issue 20, item 8)
#
# The daemon runs in a netlab Host ("the daemon host"); the attacker is the test's namespace,
# another host on the cable. IPv6 lets in a datagram whose source is an address of the
# receiving host (IPv4 drops it as a martian unless accept_local=1): an echo, or an ssmping
# reply, to it would land in whatever service of the daemon host listens on that address and
# port -- the "victim" below. The attacker sends from the daemon host's addresses with
# IP(V6)_TRANSPARENT (a socket may then send from an address its host does not hold), and from
# port 0 with raw sockets.

OWN_GROUP6 = "ff15::4e2"
OWN_GROUP4 = "239.72.0.1"
ECHO_PORT = 5000
SSMPING_PORT = 4321
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
IPV6_CHECKSUM = 7
_own_labs = 0

# In the daemon host: a service on VICTIM_PORT, every address, both families. It counts what
# reaches it until its stdin closes.
OWN_VICTIM = f"""
import select, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", {VICTIM_PORT}))
print("listening", flush=True)
got = []
while True:
    ready = select.select([s, sys.stdin], [], [], 60)[0]
    if not ready or sys.stdin in ready:
        break
    data, source = s.recvfrom(2048)
    got.append(source[0])
print(len(got), ",".join(got), flush=True)
"""


class OwnLab(NamedTuple):
    host: Host
    local_if: str
    index: int  # of local_if, here
    peer4: str  # the attacker's (and real peer's) own addresses
    peer6: str
    own4: str  # the daemon host's
    own6: str
    own_link_local: str


@pytest.fixture
def own_lab():
    global _own_labs
    _own_labs += 1
    n = _own_labs
    local_if = f"vown{n}"
    with cabled_host(f"own{n}", local_if, f"10.72.{n}", f"fd72:{n}") as host:
        fields = ip("-6", "-o", "addr", "show", "dev", "eth0", "scope", "link", host=host).split()
        link_local = fields[fields.index("inet6") + 1].split("/")[0]
        yield OwnLab(host, local_if, socket.if_nametoindex(local_if), f"10.72.{n}.1",
                     f"fd72:{n}::1", f"10.72.{n}.2", f"fd72:{n}::2", link_local)


def serve_own(lab: OwnLab, write_config, sink: NotifySink) -> DaemonProcess:
    daemon = DaemonProcess(write_config(
        f"port: {ECHO_PORT}\ninterface: eth0\nssmping: {{port: {SSMPING_PORT}}}\n"
        f"listeners:\n  - group: {OWN_GROUP6}\n  - group: {OWN_GROUP4}\n"), host=lab.host,
        env=sink.env)
    daemon.wait_for("ready:")
    return daemon


class Victim:
    """OWN_VICTIM in *host*: received() ends it and says what reached it."""

    def __init__(self, host: Host) -> None:
        self.proc = host.popen([sys.executable, "-c", OWN_VICTIM], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "listening"

    def received(self) -> str:
        out, _ = self.proc.communicate(timeout=10)
        return out.strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def status_parts(daemon: DaemonProcess, sink: NotifySink) -> dict[str, str]:
    """STATUS right now (a SIGHUP with the same file: READY=1 and a fresh STATUS), by part:
    {"[ff15::4e2]:5000": "... received 3, ...", "ssmping": "...", ...}."""
    sink.drain()
    daemon.send_signal(signal.SIGHUP)
    status = sink.wait(lambda f: "READY" in f, 5, "READY=1 after SIGHUP")["STATUS"]
    parts = {}
    for part in status.split("; "):
        key = part.split()[0]
        parts["ssmping" if key == "ssmping" else key] = part
    return parts


def listener_counts(daemon: DaemonProcess, sink: NotifySink, group: str) -> dict[str, int]:
    where = f"[{group}]:{ECHO_PORT}" if ":" in group else f"{group}:{ECHO_PORT}"
    return parse_status(status_parts(daemon, sink)[where])


def ssmping_drops(daemon: DaemonProcess, sink: NotifySink) -> dict[str, int]:
    text = status_parts(daemon, sink)["ssmping"]
    return {reason: int(n) for n, reason in
            ((m[2], m[1]) for m in re.finditer(r"(own-address|source|acl|rate) (\d+)", text))}


def send_from(source: str, sport: int, scope: int, destination: tuple, payload: bytes,
              out_index: int) -> None:
    """One UDP datagram from *source*:*sport*, an address this namespace need not hold."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, out_index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            sock.bind((source, sport, 0, scope))
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            struct.pack("=4s4si", bytes(4), bytes(4), out_index))  # ip_mreqn
            sock.bind((source, sport))
        sock.sendto(payload, destination)


def send_from_port_zero(source: str, destination: str, port: int, payload: bytes,
                        out_index: int) -> None:
    """One UDP datagram from *source* port 0 (a raw socket: no UDP socket can send it)."""
    if ":" not in source:
        with ForgedSender(source) as forged:
            forged.send(source, 0, destination, port, payload)
        return
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
        raw.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 6)  # the kernel sums it at byte 6
        raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, out_index)
        raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        raw.bind((source, 0))
        raw.sendto(struct.pack("!HHHH", 0, port, 8 + len(payload), 0) + payload,
                   (destination, 0, 0, out_index if destination.startswith("ff") else 0))


def ask(sock: socket.socket, payload: bytes, destination: tuple) -> Optional[tuple]:
    sock.sendto(payload, destination)
    try:
        return sock.recvfrom(70000)
    except socket.timeout:
        return None


def peer_socket(lab: OwnLab, ipv6: bool, port: int = 0) -> socket.socket:
    """A real peer: the attacker's host, from its own address (and *port*, 0: any)."""
    sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
    if ipv6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, lab.index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(lab.peer4))
    sock.bind((lab.peer6 if ipv6 else lab.peer4, port))
    sock.settimeout(2)
    return sock


def ssmping_request(ipv6: bool) -> bytes:
    group = ipaddress.ip_address("ff3e::4321:1234" if ipv6 else "232.43.211.234")
    return ssmping.build_request(7, 1, time.time_ns(), group)


def test_ipv6_forged_with_the_hosts_own_addresses_is_dropped_and_a_real_peer_answered(
        own_lab, write_config, sink):
    lab = own_lab
    daemon = serve_own(lab, write_config, sink)
    victim = Victim(lab.host)
    try:
        group = (OWN_GROUP6, ECHO_PORT, 0, lab.index)
        server = (lab.own6, SSMPING_PORT, 0, 0)
        for _ in range(2):
            send_from(lab.own6, VICTIM_PORT, 0, group, b"global", lab.index)
            send_from(lab.own_link_local, VICTIM_PORT, lab.index, group, b"link", lab.index)
            send_from(lab.own6, VICTIM_PORT, 0, server, ssmping_request(True), lab.index)
            send_from(lab.own_link_local, VICTIM_PORT, lab.index, server,
                      ssmping_request(True), lab.index)
        with peer_socket(lab, ipv6=True) as sock:  # a real peer is still echoed ...
            reply = ask(sock, b"real", group)
            assert reply is not None and reply[0] == b"real", daemon.log
            reply = ask(sock, ssmping_request(True), server)  # ... and answered by ssmping
            assert reply is not None and reply[0][:1] == b"A", daemon.log
        counts = listener_counts(daemon, sink, OWN_GROUP6)
        assert (counts["received"], counts["echoed"], counts.get("own-address")) == (5, 1, 4), \
            counts
        assert ssmping_drops(daemon, sink).get("own-address") == 4
        assert victim.received() == "0", "the daemon host's own service received echoes"
        daemon.wait_for("its source is an address of this host but it came in from the network")
    finally:
        victim.close()
        daemon.kill()


def test_an_address_added_later_is_refused_and_one_removed_is_a_peer_again(
        own_lab, write_config, sink):
    lab = own_lab
    daemon = serve_own(lab, write_config, sink)
    added = lab.own6.replace("::2", "::7")
    group = (OWN_GROUP6, ECHO_PORT, 0, lab.index)
    try:
        ip("-6", "addr", "add", f"{added}/64", "dev", "eth0", "nodad", host=lab.host)

        def refused() -> bool:  # sent from a port nothing listens on: an echo harms nobody
            send_from(added, VICTIM_PORT + 1, 0, group, b"new", lab.index)
            return listener_counts(daemon, sink, OWN_GROUP6).get("own-address", 0) > 0

        wait_until(refused, timeout=10, step=0.2)
        ip("-6", "addr", "del", f"{added}/64", "dev", "eth0", host=lab.host)
        echoed = listener_counts(daemon, sink, OWN_GROUP6)["echoed"]

        def echoed_again() -> bool:
            send_from(added, VICTIM_PORT + 1, 0, group, b"gone", lab.index)
            return listener_counts(daemon, sink, OWN_GROUP6)["echoed"] > echoed

        wait_until(echoed_again, timeout=10, step=0.2)
    finally:
        daemon.kill()


def test_ipv4_forged_with_the_hosts_own_address_is_dropped_where_accept_local_lets_it_in(
        own_lab, write_config, sink):
    lab = own_lab
    lab.host.run(["sysctl", "-qw", "net.ipv4.conf.all.accept_local=1"])
    daemon = serve_own(lab, write_config, sink)
    victim = Victim(lab.host)
    try:
        for _ in range(3):
            send_from(lab.own4, VICTIM_PORT, 0, (OWN_GROUP4, ECHO_PORT), b"own", lab.index)
            send_from(lab.own4, VICTIM_PORT, 0, (lab.own4, SSMPING_PORT),
                      ssmping_request(False), lab.index)
        with sender(lab.peer4) as sock:  # a real peer is still echoed
            reply = echo(sock, b"real", OWN_GROUP4, ECHO_PORT, timeout=2)
            assert reply is not None and reply[0] == b"real", daemon.log
        counts = listener_counts(daemon, sink, OWN_GROUP4)
        assert (counts["received"], counts["echoed"], counts.get("own-address")) == (4, 1, 3), \
            counts
        assert ssmping_drops(daemon, sink).get("own-address") == 3
        assert victim.received() == "0", "the daemon host's own service received echoes"
    finally:
        victim.close()
        daemon.kill()


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_source_port_0_is_an_impossible_source(own_lab, write_config, sink, ipv6):
    lab = own_lab
    daemon = serve_own(lab, write_config, sink)
    peer, group_address = (lab.peer6, OWN_GROUP6) if ipv6 else (lab.peer4, OWN_GROUP4)
    group = (OWN_GROUP6, ECHO_PORT, 0, lab.index) if ipv6 else (OWN_GROUP4, ECHO_PORT)
    try:
        for _ in range(3):
            send_from_port_zero(peer, group_address, ECHO_PORT, b"zero", lab.index)
            send_from_port_zero(peer, lab.own6 if ipv6 else lab.own4, SSMPING_PORT,
                                ssmping_request(ipv6), lab.index)
        for port in (0, 200):  # the same peer from a real port, any or a low one: echoed
            with peer_socket(lab, ipv6, port) as sock:
                reply = ask(sock, b"real", group)
                assert reply is not None and reply[0] == b"real", daemon.log
        counts = listener_counts(daemon, sink, group_address)
        assert (counts["received"], counts["echoed"], counts.get("source")) == (5, 2, 3), counts
        assert "send-error" not in counts, counts
        assert ssmping_drops(daemon, sink).get("source") == 3
        assert "EINVAL" not in daemon.log
        daemon.wait_for("cannot be a real peer (port 0")
    finally:
        daemon.kill()


# In the daemon host: its own clients, from its own addresses: over lo to an IPv4 listener
# joined there, to the ssmping listener at its own IPv6 address, and out of eth0 to an IPv6
# group (the looped copy comes in on eth0).
SELF_PROBES = """
import socket, struct, sys
own4, own6, request, group4, group6, port, ssmping_port = sys.argv[1:]
eth0, port, ssmping_port = socket.if_nametoindex("eth0"), int(port), int(ssmping_port)
def answer(sock, payload, destination):
    sock.settimeout(1)
    sock.sendto(payload, destination)
    try:
        return sock.recvfrom(2000)[0][:4].decode("ascii", "replace")
    except socket.timeout:
        return "none"
lo4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
lo_mreqn = struct.pack("=4s4si", bytes(4), bytes(4), 1)
lo4.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, lo_mreqn)
lo4.bind((own4, 0))
ssm6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
ssm6.bind((own6, 0))
out6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
out6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, eth0)
out6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
out6.bind((own6, 0))
print(answer(lo4, b"self", (group4, port)),
      answer(ssm6, bytes.fromhex(request), (own6, ssmping_port)),
      answer(out6, b"self", (group6, port, 0, eth0)))
"""


def test_this_hosts_own_probes_over_lo_are_answered_through_a_real_interface_dropped(
        own_lab, write_config, sink):
    """What the README says: a probe from the daemon host itself is answered over lo (IPv4),
    and is dropped where it cannot be told apart from a forged one: the looped copy of a
    multicast probe out of eth0, and (IPv6 reports the interface that holds the destination
    address as the arrival one, eth0) a unicast request to this host's own IPv6 address."""
    lab = own_lab
    lab.host.run(["sysctl", "-qw", "net.ipv4.conf.all.accept_local=1"])  # the IPv4 rule on
    daemon = DaemonProcess(write_config(
        f"port: {ECHO_PORT}\nssmping: {{port: {SSMPING_PORT}}}\nlisteners:\n"
        f"  - {{group: {OWN_GROUP4}, interface: lo}}\n"
        "  - {group: 'ff15::4e3', interface: eth0}\n"), host=lab.host, env=sink.env)
    try:
        daemon.wait_for("ready:")
        done = lab.host.run([sys.executable, "-c", SELF_PROBES, lab.own4, lab.own6,
                             ssmping_request(True).hex(), OWN_GROUP4, "ff15::4e3",
                             str(ECHO_PORT), str(SSMPING_PORT)], check=False)
        assert done.stdout.split() == ["self", "none", "none"], (done.stderr, daemon.lines)
        counts = listener_counts(daemon, sink, OWN_GROUP4)
        assert (counts["echoed"], counts["dropped"]) == (1, 0), counts
        assert listener_counts(daemon, sink, "ff15::4e3").get("own-address") == 1
        assert ssmping_drops(daemon, sink) == {"own-address": 1}
    finally:
        daemon.kill()
