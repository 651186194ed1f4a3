"""IPv6 and the group reply modes on the batched echo path (issue 21), and the same rules on
both paths: `make test` runs this file on the fast and on the plain path (ECHO_TESTS), and
every figure asserted here is the same on both.

Clients send bursts, so that the daemon reads many datagrams per wake-up and the fast path
checks them as one batch (and walks a batch with an exception), not one at a time. The
daemon runs in a netlab Host cabled to the test's namespace; every loop is bounded.
"""

from __future__ import annotations

import select
import socket
import struct
import time

import pytest

from daemonproc import DaemonProcess
from loadlab import counters, settled_counters
from mcast_echo.config import load_config
from mcast_echo.daemon import echopath
from mcast_echo.daemon.batchpath4 import BatchPath
from mcast_echo.daemon.batchpath6 import BatchPath6
from mcast_echo.net import ancillary
from mcast_echo.wire import probe
from netlab import dual_stack_lab, ip

PORT = 5000
BURST = 150
_labs = 0


@pytest.fixture
def lab():
    """(host, local_if, (v4 local, v4 remote), (v6 local, v6 remote)): the responder host
    cabled to the test's namespace, dual stack."""
    global _labs
    _labs += 1
    local_if = f"vf{_labs}"
    with dual_stack_lab(f"fast{_labs}", local_if, f"10.72.{_labs}", f"fd72:{_labs}") as lab:
        yield lab


def serve(host, write_config, sink, text: str) -> DaemonProcess:
    daemon = DaemonProcess(write_config(text), host=host, env=sink.env)
    daemon.wait_for("ready:")
    return daemon


def client(ipv6: bool, local_if: str, local: str, port: int = 0,
           join: str = "") -> socket.socket:
    """A client socket: bound to *local* (or, to see group echoes, to the wildcard address
    and joined to *join* on *local_if*), sending its multicast out of *local_if*."""
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    index = socket.if_nametoindex(local_if)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    if ipv6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.bind(("::" if join else local, port, 0, 0))
        if join:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                            socket.inet_pton(socket.AF_INET6, join) + struct.pack("=I", index))
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock.bind(("" if join else local, port))
        if join:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            struct.pack("=4s4si", socket.inet_aton(join), bytes(4), index))
    ancillary.ask_for_arrival(sock, ipv6)
    return sock


def collect(sock: socket.socket, wanted: int, quiet: float = 1.0,
            limit: float = 10.0) -> list[tuple[bytes, bool]]:
    """(payload, sent to a group) of what comes, until *wanted* came (then *quiet* more, to
    see any extra) or nothing came for *quiet* seconds; at most *limit* seconds."""
    got: list[tuple[bytes, bool]] = []
    deadline = time.monotonic() + limit
    extra_until = None
    while time.monotonic() < deadline:
        if extra_until is None and len(got) >= wanted:
            extra_until = time.monotonic() + quiet
        wait = quiet if extra_until is None else extra_until - time.monotonic()
        if wait <= 0 or not select.select([sock], [], [], wait)[0]:
            break
        data, ancdata, _, _ = sock.recvmsg(70000, 256)
        got.append((data, ancillary.Received(ancdata).to_group))
    return got


# ------------------------------------------------------------------ which path

@pytest.mark.parametrize("group", ["224.3.29.71", "ff15::1234", "ff3e::4e4", "ff02::4e4"])
@pytest.mark.parametrize("reply", ["unicast", "group", "both"])
def test_every_listener_takes_the_fast_path(monkeypatch, tmp_path, group, reply):
    monkeypatch.setenv(echopath.ENV, "fast")
    config = tmp_path / "c.yaml"
    sources = "sources: ['fd00::1']\n" if group.startswith("ff3e") else ""
    config.write_text(f"group: '{group}'\nreply: {reply}\ninterface: lo\n{sources}")
    (listener,) = load_config(str(config)).listeners
    paths = echopath.Paths()
    assert type(paths.pick(listener)) is (BatchPath6 if ":" in group else BatchPath)
    # what the journal says at start (echo path: ...)
    assert paths.name == "fast (recvmmsg/sendmmsg, 64 per call): IPv4 and IPv6, every reply mode"


# ------------------------------------------------------------------ IPv6 policy in bursts

def test_ipv6_allow_and_rate_limit_on_bursts(lab, write_config, sink):
    """Two sources send bursts at once: the one outside 'allow' gets nothing, the allowed
    one its burst of the rate limit and not one echo more; every datagram is counted."""
    host, local_if, _, (local, _remote) = lab
    stranger = local.replace("::1", "::7")
    ip("-6", "addr", "add", f"{stranger}/64", "dev", local_if, "nodad")
    daemon = serve(host, write_config, sink,
                   f"group: ff15::4e5\nport: {PORT}\ninterface: eth0\nallow: ['{local}/128']\n"
                   "rate_limit: {rate: 1, burst: 60}\nrecv_buffer: 4MiB\n")
    try:
        with client(True, local_if, local) as allowed, \
                client(True, local_if, stranger) as refused:
            for n in range(BURST):
                allowed.sendto(b"allowed %d" % n, ("ff15::4e5", PORT))
                refused.sendto(b"refused %d" % n, ("ff15::4e5", PORT))
            echoes = collect(allowed, 60)
            assert not collect(refused, 0, quiet=0.2)
        count = settled_counters(daemon, sink)
        assert count["received"] == 2 * BURST, count
        assert count["acl"] == BURST, count
        # the bucket refills at 1/s while the burst is read: 60, or a token or two more
        assert 60 <= len(echoes) <= 63 and count["echoed"] == len(echoes), (len(echoes), count)
        assert count["rate"] == BURST - count["echoed"], count
        assert {data for data, _ in echoes} <= {b"allowed %d" % n for n in range(BURST)}
        assert not any(to_group for _, to_group in echoes)
    finally:
        daemon.kill()


def test_ipv6_ssm_echoes_its_source_in_bursts(lab, write_config, sink):
    host, local_if, _, (local, _remote) = lab
    stranger = local.replace("::1", "::8")
    ip("-6", "addr", "add", f"{stranger}/64", "dev", local_if, "nodad")
    daemon = serve(host, write_config, sink,
                   f"group: ff3e::4e6\nport: {PORT}\ninterface: eth0\nsources: ['{local}']\n"
                   "recv_buffer: 4MiB\n")
    try:
        with client(True, local_if, local) as listed, \
                client(True, local_if, stranger) as unlisted:
            for n in range(BURST):
                listed.sendto(b"listed %d" % n, ("ff3e::4e6", PORT))
                unlisted.sendto(b"unlisted %d" % n, ("ff3e::4e6", PORT))
            echoes = collect(listed, BURST)
            assert not collect(unlisted, 0, quiet=0.2)
        assert sorted(data for data, _ in echoes) == sorted(b"listed %d" % n
                                                            for n in range(BURST))
        count = settled_counters(daemon, sink)
        assert count["echoed"] == BURST, count  # the unlisted: filtered by the kernel, or "ssm"
        assert count["received"] - BURST == count.get("ssm", 0), count
    finally:
        daemon.kill()


# ------------------------------------------------------------------ reply modes in bursts

@pytest.mark.parametrize("group", ["239.4.4.7", "ff15::4e7", "ff02::4e7"])
@pytest.mark.parametrize("reply", ["unicast", "group", "both"])
def test_reply_modes_in_bursts_and_never_a_loop(lab, write_config, sink, group, reply):
    """A burst of plain datagrams and probes that ask for the trailer: each answered as the
    reply mode says (the group copy on the sender's port), every echo the size of its
    request; a burst from the group's own port (another responder's group echo) never goes
    back to the group, and is counted as a loop."""
    host, local_if, (local4, _), (local6, _) = lab
    ipv6 = ":" in group  # ff02::: a link-scope group, link-local senders (with their scope)
    local = local6 if ipv6 else local4
    daemon = serve(host, write_config, sink,
                   f"group: '{group}'\nport: {PORT}\ninterface: eth0\nreply: {reply}\n"
                   "rate_limit: off\nrecv_buffer: 4MiB\n")
    try:
        requests = [b"plain %d" % n if n % 10 else
                    probe.build_probe(5, n, time.time_ns(), 120, flags=probe.FLAG_WANT_TRAILER)
                    for n in range(BURST)]
        with client(ipv6, local_if, local, join=group) as sock:
            for request in requests:
                sock.sendto(request, (group, PORT))
            copies = (reply != "group") + (reply != "unicast")
            echoes = collect(sock, copies * BURST)
        unicast = [data for data, to_group in echoes if not to_group]
        grouped = [data for data, to_group in echoes if to_group]
        assert len(unicast) == (BURST if reply != "group" else 0), (len(unicast), daemon.log)
        assert len(grouped) == (BURST if reply != "unicast" else 0), (len(grouped), daemon.log)
        for copy in (unicast, grouped):
            if copy:
                assert sorted(map(len, copy)) == sorted(map(len, requests))  # never larger
                with_trailer = [probe.check_echo(data, 5) for data in copy
                                if data.startswith(probe.PROBE_MAGIC)]
                assert len(with_trailer) == BURST // 10
                assert all(echo is not None and echo.intact and echo.trailer is not None
                           for echo in with_trailer)
        count = settled_counters(daemon, sink)
        assert (count["received"], count["echoed"], count["dropped"]) == (BURST, BURST, 0), count

        # from the group's own port: another responder's echo, as it would come
        with client(ipv6, local_if, local, port=PORT, join=group) as from_port:
            for n in range(BURST):
                from_port.sendto(b"echo %d" % n, (group, PORT))
            echoes = collect(from_port, 0 if reply == "group" else BURST, quiet=0.5)
        assert not [data for data, to_group in echoes if to_group], echoes[:3]
        assert len(echoes) == (0 if reply == "group" else BURST), len(echoes)
        count = counters(daemon, sink)
        assert count.get("loop", 0) == (0 if reply == "unicast" else BURST), count
        assert count["echoed"] == (BURST if reply == "group" else 2 * BURST), count
    finally:
        daemon.kill()


# ------------------------------------------------------------------ impossible IPv6 sources

def ipv6_udp_frame(source: str, sport: int, group: str, port: int, payload: bytes,
                   mac: bytes) -> bytes:
    """An Ethernet frame to *group* carrying IPv6 + UDP from any *source*, :: included
    (UDP's checksum over the IPv6 pseudo-header, which IPv6 requires)."""
    src, dst = (socket.inet_pton(socket.AF_INET6, a) for a in (source, group))
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!I3xB", length, socket.IPPROTO_UDP)
    udp = struct.pack("!HHHH", sport, port, length, 0) + payload
    data = pseudo + udp + b"\0" * (len(udp) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total >> 16) + (total & 0xFFFF)
    udp = udp[:6] + struct.pack("!H", ~total & 0xFFFF or 0xFFFF) + udp[8:]
    header = struct.pack("!IHBB", 6 << 28, length, socket.IPPROTO_UDP, 1) + src + dst
    return b"\x33\x33" + dst[-4:] + mac + b"\x86\xdd" + header + udp


def test_an_ipv6_datagram_from_the_unspecified_address_is_never_echoed(lab, write_config,
                                                                       sink):
    """The kernel takes a datagram from :: off the wire (multicast, loopback and
    IPv4-mapped sources it drops itself); an echo to it would go to [::]:port, this host.
    Mixed into a burst of real ones, so that the fast path finds it in a batch."""
    host, local_if, _, (local, _remote) = lab
    daemon = serve(host, write_config, sink,
                   f"group: ff15::4e9\nport: {PORT}\ninterface: eth0\nrate_limit: off\n"
                   "recv_buffer: 4MiB\n")
    try:
        link = ip("-o", "link", "show", "dev", local_if).split()
        mac = bytes.fromhex(link[link.index("link/ether") + 1].replace(":", ""))
        with client(True, local_if, local) as sock, \
                socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
            raw.bind((local_if, 0))
            for n in range(40):
                sock.sendto(b"real %d" % n, ("ff15::4e9", PORT))
                raw.send(ipv6_udp_frame("::", 5555, "ff15::4e9", PORT, b"forged %d" % n, mac))
            echoes = collect(sock, 40)
        assert sorted(data for data, _ in echoes) == sorted(b"real %d" % n for n in range(40))
        count = settled_counters(daemon, sink)
        assert (count["received"], count["echoed"], count.get("source")) == (80, 40, 40), count
    finally:
        daemon.kill()
