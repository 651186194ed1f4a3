"""Many listeners on one port share one socket (issue 21, part 3; daemon/sharedsocket.py).

The listeners of a port share one wildcard-bound socket that joins all their groups and
tells their datagrams apart by the pktinfo's destination, so that traffic spread over many
groups still batches. Every listener keeps its own rules: each group answered once, as
itself (the probe trailer's group); 'allow', max_datagram, the rate limit (its own buckets)
and SSM sources per listener, in a burst that mixes them; unicast to the port never echoed
(a counted stray); a reload that removes one group leaves the others answering, their
counters kept. `make test` runs this file on the fast and on the plain path (ECHO_TESTS).

The daemon runs in a netlab Host cabled to the test's namespace; clients send bursts, so
that one batch holds several listeners' datagrams. Every loop is bounded.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time

import pytest

from loadlab import settled_counters
from mcast_echo.wire import probe
from netlab import dual_stack_lab, ip
from test_fast_paths import client, collect, serve
from test_metrics import scrape, value

PORT = 5000
BURST = 100
_labs = itertools.count(1)


@pytest.fixture
def lab():
    """The responder host cabled to the test's namespace, as test_fast_paths' lab."""
    n = next(_labs)
    with dual_stack_lab(f"share{n}", f"vsh{n}", f"10.79.{n}", f"fd79:{n}") as lab:
        yield lab

def sockets_on_port(host, ipv6: bool) -> list[str]:
    """The local addresses (hex, as /proc/net/udp[6] shows them) of the host's UDP sockets
    bound to PORT."""
    table = host.run(["cat", "/proc/net/udp6" if ipv6 else "/proc/net/udp"]).stdout
    rows = [line.split()[1] for line in table.splitlines()[1:]]
    return [row for row in rows if row.endswith(f":{PORT:04X}")]


def listeners(groups: list[str], extra: str = "") -> str:
    return "listeners:\n" + "".join(f"  - group: '{group}'\n{extra}" for group in groups)


@pytest.mark.parametrize("ipv6,count", [(False, 200), (True, 60)])
def test_a_burst_over_many_groups_of_one_port_is_answered_once_by_each_as_itself(
        lab, write_config, sink, ipv6, count):
    host, local_if, v4, v6 = lab
    local = v6[0] if ipv6 else v4[0]
    groups = ([f"ff15::77:{n + 1:x}" for n in range(count)] if ipv6
              else [f"239.77.{n // 250}.{n % 250 + 1}" for n in range(count)])
    host.run(["sysctl", "-w", f"net.ipv4.igmp_max_memberships={count}"])  # room on one socket
    daemon = serve(host, write_config, sink, f"port: {PORT}\ninterface: eth0\n"
                   + listeners(groups))
    try:
        assert len(sockets_on_port(host, ipv6)) == 1, sockets_on_port(host, ipv6)
        session = 4242
        replies = []
        with client(ipv6, local_if, local) as sock:
            # every group twice, round-robin, in bursts of BURST (the socket's one receive
            # buffer, 208 KiB by default, holds about 200 such datagrams)
            sequence = [(rounds * count + n, group) for rounds in range(2)
                        for n, group in enumerate(groups)]
            for start in range(0, len(sequence), BURST):
                for seq, group in sequence[start:start + BURST]:
                    address = (group, PORT, 0, 0) if ipv6 else (group, PORT)
                    sock.sendto(probe.build_probe(session, seq, time.time_ns(), 200), address)
                replies += collect(sock, len(sequence[start:start + BURST]))
        answered: dict[int, str] = {}
        for data, _ in replies:
            echo = probe.check_echo(data, session)
            assert echo is not None and echo.intact and echo.trailer is not None
            seq = echo.header.seq
            assert seq not in answered, f"probe {seq} answered twice"
            answered[seq] = echo.trailer.group
        assert len(answered) == 2 * count
        for seq, group in answered.items():
            assert group == groups[seq % count], (seq, group)
        totals = settled_counters(daemon, sink)
        assert (totals["received"], totals["echoed"], totals["dropped"]) == (
            2 * count, 2 * count, 0), totals
    finally:
        daemon.kill()


def test_unicast_to_the_shared_port_is_never_echoed_and_is_counted(lab, write_config, sink):
    host, local_if, (local, remote), _ = lab
    listen = f"{remote}:9101"
    daemon = serve(host, write_config, sink, f"port: {PORT}\ninterface: eth0\n"
                   f"metrics: {{listen: '{listen}'}}\n" + listeners(["239.78.0.1", "239.78.0.2"]))
    try:
        assert value(scrape(listen), "mcast_echo_port_strays_total", port=str(PORT),
                     family="ipv4") == 0  # there from the start
        assert sockets_on_port(host, False) == ["00000000:1388"]  # the wildcard, once
        with client(False, local_if, local) as sock:
            for n in range(20):
                sock.sendto(b"unicast %d" % n, (remote, PORT))
            sock.sendto(b"group", ("239.78.0.2", PORT))
            replies = collect(sock, 1)
        assert [data for data, _ in replies] == [b"group"]
        status = sink.wait(lambda f: "READY" in f, what="READY")["STATUS"]
        wanted = "strays to the ports dropped 20"
        deadline = time.monotonic() + 10
        while wanted not in status and time.monotonic() < deadline:
            status = counters_status(daemon, sink)
        assert wanted in status, status
        assert "239.78.0.2:5000 on eth0: received 1, echoed 1, dropped 0" in status, status
        assert "239.78.0.1:5000 on eth0: received 0, echoed 0, dropped 0" in status, status
        assert value(scrape(listen), "mcast_echo_port_strays_total", port=str(PORT),
                     family="ipv4") == 20
    finally:
        daemon.kill()



def test_each_listener_keeps_its_reply_mode_in_a_burst_that_mixes_them(lab, write_config, sink):
    """One port, three listeners: unicast, group and both replies; one burst round-robin
    over them. Each group's requests come back as its listener says -- to the sender, to
    its own group on the sender's port, or both -- never as a neighbour's."""
    host, local_if, (local, remote), _ = lab
    modes = {"239.83.0.1": "unicast", "239.83.0.2": "group", "239.83.0.3": "both"}
    daemon = serve(host, write_config, sink, f"port: {PORT}\ninterface: eth0\n"
                   "rate_limit: off\nlisteners:\n" + "".join(
                       f"  - group: {group}\n    reply: {mode}\n"
                       for group, mode in modes.items()))
    try:
        assert len(sockets_on_port(host, False)) == 1
        with client(False, local_if, local, join="239.83.0.2") as sock:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack(
                "=4s4si", socket.inet_aton("239.83.0.3"), bytes(4),
                socket.if_nametoindex(local_if)))
            for n in range(20):
                for group in modes:
                    sock.sendto(f"{group} {n}".encode(), (group, PORT))
            replies = collect(sock, 80)
        came: dict[tuple[str, bool], int] = {}
        for data, to_group in replies:
            key = (data.split()[0].decode(), to_group)
            came[key] = came.get(key, 0) + 1
        assert came == {("239.83.0.1", False): 20, ("239.83.0.2", True): 20,
                        ("239.83.0.3", False): 20, ("239.83.0.3", True): 20}, came
    finally:
        daemon.kill()


def counters_status(daemon, sink) -> str:
    """A fresh STATUS (a SIGHUP with the same file: READY=1 with it)."""
    import signal

    sink.drain()
    daemon.send_signal(signal.SIGHUP)
    return sink.wait(lambda f: "READY" in f, 5, "READY=1 after SIGHUP")["STATUS"]


def test_each_listener_keeps_its_own_rules_in_a_burst_that_mixes_them(lab, write_config, sink):
    """One port: a listener whose 'allow' refuses us, one with a small max_datagram, one
    with SSM sources that do not include us, two alike with a rate limit of 5 (each its own
    buckets), and a plain one; one burst, round-robin over them."""
    host, local_if, (local, remote), _ = lab
    daemon = serve(host, write_config, sink, f"""port: {PORT}
interface: eth0
listeners:
  - group: 239.79.0.1
    allow: [192.0.2.0/24]
  - group: 239.79.0.2
    max_datagram: 100
  - group: 232.79.0.3
    sources: [{remote}]
  - group: 239.79.0.4
    rate_limit: {{rate: 1, burst: 5}}
  - group: 239.79.0.5
    rate_limit: {{rate: 1, burst: 5}}
  - group: 239.79.0.6
    rate_limit: off
""")
    try:
        assert len(sockets_on_port(host, False)) == 1
        groups = [f"239.79.0.{n}" for n in (1, 2)] + ["232.79.0.3"] + \
            [f"239.79.0.{n}" for n in (4, 5, 6)]
        with client(False, local_if, local) as sock:
            for n in range(10):
                for group in groups:
                    size = 150 if n % 2 else 50  # every other one over max_datagram 100
                    sock.sendto(f"{group} {n} ".encode().ljust(size, b"."), (group, PORT))
            replies = collect(sock, 35)
        echoed: dict[str, int] = {}
        for data, _ in replies:
            group = data.split()[0].decode()
            echoed[group] = echoed.get(group, 0) + 1
        # 239.79.0.2: the five small ones; .4 and .5: five each, their own bursts; .6: all
        assert echoed == {"239.79.0.2": 5, "239.79.0.4": 5, "239.79.0.5": 5, "239.79.0.6": 10}
        status = counters_status(daemon, sink)
        for where, counts in (
                ("239.79.0.1", "received 10, echoed 0, dropped 10 (acl 10)"),
                ("239.79.0.2", "received 10, echoed 5, dropped 5 (size 5)"),
                ("239.79.0.4", "received 10, echoed 5, dropped 5 (rate 5)"),
                ("239.79.0.5", "received 10, echoed 5, dropped 5 (rate 5)"),
                ("239.79.0.6", "received 10, echoed 10, dropped 0")):
            assert f"{where}:5000 on eth0: {counts}" in status, (where, status)
        # the SSM group's source filter is on the shared socket: nothing of ours came in
        assert "232.79.0.3:5000 on eth0: received 0, echoed 0, dropped 0" in status, status
    finally:
        daemon.kill()


def test_ssm_sources_hold_on_a_shared_socket(lab, write_config, sink):
    """An SSM group and an any-source group on one port: the SSM group answers its listed
    source only; the other answers both."""
    host, local_if, (local, remote), _ = lab
    unlisted = local.rsplit(".", 1)[0] + ".3"
    ip("addr", "add", f"{unlisted}/24", "dev", local_if)
    daemon = serve(host, write_config, sink, f"""port: {PORT}
interface: eth0
listeners:
  - group: 232.80.0.1
    sources: [{local}]
  - group: 239.80.0.2
""")
    try:
        assert len(sockets_on_port(host, False)) == 1
        with client(False, local_if, local) as listed, \
                client(False, local_if, unlisted) as stranger:
            for n in range(5):
                stranger.sendto(b"stranger ssm %d" % n, ("232.80.0.1", PORT))
                stranger.sendto(b"stranger asm %d" % n, ("239.80.0.2", PORT))
                listed.sendto(b"listed ssm %d" % n, ("232.80.0.1", PORT))
            from_stranger = sorted(data for data, _ in collect(stranger, 5))
            from_listed = sorted(data for data, _ in collect(listed, 5))
        assert from_stranger == [b"stranger asm %d" % n for n in range(5)]
        assert from_listed == [b"listed ssm %d" % n for n in range(5)]
    finally:
        daemon.kill()


def test_a_reload_that_removes_one_group_of_a_shared_socket_keeps_the_others(
        lab, write_config, sink):
    host, local_if, (local, remote), _ = lab
    base = f"port: {PORT}\ninterface: eth0\nrate_limit: off\n"
    groups = ["239.81.0.1", "239.81.0.2", "239.81.0.3"]
    daemon = serve(host, write_config, sink, base + listeners(groups))
    try:
        with client(False, local_if, local) as sock:
            for group in groups:
                sock.sendto(group.encode(), (group, PORT))
            assert len(collect(sock, 3)) == 3
            write_config(base + listeners(groups[:2] + ["239.81.0.4"]))  # .3 out, .4 in
            status = counters_status(daemon, sink)
            deadline = time.monotonic() + 10
            while "239.81.0.4:5000 on eth0" not in status and time.monotonic() < deadline:
                status = counters_status(daemon, sink)  # its join is a chore after READY
            assert "239.81.0.3" not in status, status
            for group in groups + ["239.81.0.4"]:
                sock.sendto(group.encode(), (group, PORT))
            replies = sorted(data for data, _ in collect(sock, 3))
        assert replies == [b"239.81.0.1", b"239.81.0.2", b"239.81.0.4"]
        assert len(sockets_on_port(host, False)) == 1
        status = counters_status(daemon, sink)
        for group, seen in (("239.81.0.1", 2), ("239.81.0.2", 2), ("239.81.0.4", 1)):
            assert f"{group}:5000 on eth0: received {seen}, echoed {seen}" in status, status
    finally:
        daemon.kill()


def test_one_listener_keeps_its_group_bound_socket_and_a_reload_adding_one_keeps_working(
        lab, write_config, sink):
    """A port with one listener binds its group, as before sharing existed (other programs may
    bind other groups of the port beside it); a reload that adds a second group to it keeps
    a socket per listener until a restart (the wildcard cannot bind beside the old socket)
    instead of failing."""
    host, local_if, (local, remote), _ = lab
    base = f"port: {PORT}\ninterface: eth0\nrate_limit: off\n"
    wildcard = f"00000000:{PORT:04X}"
    daemon = serve(host, write_config, sink, base + listeners(["239.82.0.1"]))
    try:
        [bound] = sockets_on_port(host, False)
        assert bound != wildcard
        with client(False, local_if, local) as sock:
            sock.sendto(b"one", ("239.82.0.1", PORT))
            assert [data for data, _ in collect(sock, 1)] == [b"one"]
            write_config(base + listeners(["239.82.0.1", "239.82.0.2"]))
            status = counters_status(daemon, sink)
            deadline = time.monotonic() + 10
            while "239.82.0.2:5000 on eth0" not in status and time.monotonic() < deadline:
                status = counters_status(daemon, sink)
            assert "reload failed" not in status, status
            for group in ("239.82.0.1", "239.82.0.2"):
                sock.sendto(group.encode(), (group, PORT))
            replies = sorted(data for data, _ in collect(sock, 2))
        assert replies == [b"239.82.0.1", b"239.82.0.2"]
        on_port = sockets_on_port(host, False)
        assert len(on_port) == 2 and wildcard not in on_port, on_port
    finally:
        daemon.kill()
