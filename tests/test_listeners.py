"""All of multicast (issue 9): many groups and ports, every interface, IPv6 (MLD) and SSM,
the reply modes, a thousand groups, and reloads that leave unchanged listeners alone.

The daemon runs in a netlab Host; clients in the test's namespace or in other Hosts, over
veth pairs and a bridge made here. Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from daemonproc import DaemonProcess
from loadlab import NotifySink, counters
from netlab import Host, Lan, dual_stack_lab, ip, unplug, veth
from waiting import wait_until
from yardstick import allowance

PORT = 5000
_labs = 0


@pytest.fixture
def lab():
    """The responder host, cabled to the test's namespace: IPv4 10.68.N.1 <-> .2 and IPv6
    fd68:N::1 <-> fd68:N::2 on eth0. Yields (host, local_if, v4 (local, remote),
    v6 (local, remote))."""
    global _labs
    _labs += 1
    local_if = f"vl{_labs}"
    with dual_stack_lab(f"resp{_labs}", local_if, f"10.68.{_labs}", f"fd68:{_labs}") as lab:
        yield lab


def v4_client(local: str, ttl: int = 1, timeout: float = 1.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
    sock.bind((local, 0))
    sock.settimeout(timeout)
    return sock


def v6_client(ifname: str, local: str = "::", timeout: float = 1.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    index = socket.if_nametoindex(ifname)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    sock.bind((local, 0, 0, index if local.startswith("fe80") else 0))
    sock.settimeout(timeout)
    return sock


def ask(sock: socket.socket, payload: bytes, address: tuple) -> tuple:
    """Send *payload*; the reply and where it came from, or (None, None)."""
    sock.sendto(payload, address)
    try:
        return sock.recvfrom(70000)
    except socket.timeout:
        return None, None


def serve(host: Host, write_config, sink: NotifySink, text: str) -> DaemonProcess:
    daemon = DaemonProcess(write_config(text), host=host, env=sink.env)
    daemon.wait_for("ready:")
    return daemon


# ------------------------------------------------------------------ groups and ports

def test_two_groups_on_one_port_and_one_group_on_two_ports(lab, write_config, sink):
    host, _, (local, remote), _ = lab
    daemon = serve(host, write_config, sink, f"""
interface: eth0
listeners:
  - group: 239.1.1.1
    port: {PORT}
  - group: 239.1.1.2
    port: {PORT}
  - group: 239.1.1.1
    port: {PORT + 1}
""")
    try:
        with v4_client(local) as sock:
            for group, port in (("239.1.1.1", PORT), ("239.1.1.2", PORT),
                                ("239.1.1.1", PORT + 1)):
                payload = f"{group}:{port}".encode()
                data, source = ask(sock, payload, (group, port))
                assert data == payload and source == (remote, port), (group, port, source)
            data, _ = ask(sock, b"nobody", ("239.1.1.2", PORT + 1))  # not configured
            assert data is None
        status = sink.wait(lambda f: "READY" in f, what="READY")["STATUS"]
        for where in ("239.1.1.1:5000 on eth0", "239.1.1.2:5000 on eth0",
                      "239.1.1.1:5001 on eth0"):
            assert where in status, status
        text = counters_line(daemon, sink)
        assert "239.1.1.1:5000 on eth0: received 1, echoed 1" in text, text
        assert "239.1.1.2:5000 on eth0: received 1, echoed 1" in text, text
    finally:
        daemon.kill()


def counters_line(daemon: DaemonProcess, sink: NotifySink) -> str:
    import signal

    sink.drain()
    daemon.send_signal(signal.SIGHUP)
    return sink.wait(lambda f: "READY" in f, what="READY after SIGHUP")["STATUS"]


# ------------------------------------------------------------------ interfaces

def test_interface_all_joins_every_interface_and_one_added_later(lab, write_config, sink):
    host, _, (local, remote), _ = lab
    daemon = serve(host, write_config, sink,
                   f"group: 239.2.2.2\nport: {PORT}\ninterface: all\n")
    second = f"vx{_labs}"
    try:
        assert ("eth0", "239.2.2.2") in host.igmp_groups()
        assert ("lo", "239.2.2.2") not in host.igmp_groups()  # lo only when named
        with v4_client(local) as sock:
            assert ask(sock, b"first", ("239.2.2.2", PORT))[0] == b"first"
        t0 = time.monotonic()
        veth(second, f"10.69.{_labs}.1/24", host, "eth1", f"10.69.{_labs}.2/24")
        wait_until(lambda: ("eth1", "239.2.2.2") in host.igmp_groups(), 10.0)
        joined_after = time.monotonic() - t0
        with v4_client(f"10.69.{_labs}.1") as sock:
            data, source = ask(sock, b"second", ("239.2.2.2", PORT))
        assert data == b"second" and source[0] == f"10.69.{_labs}.2"
        print(f"interface: all joined a new interface {joined_after * 1000:.0f} ms after it "
              "appeared")
        assert joined_after < allowance(2.0, 6), joined_after
        status = counters_line(daemon, sink)
        assert "239.2.2.2:5000 on eth0, eth1: received 2, echoed 2" in status, status
    finally:
        daemon.kill()
        unplug(second)


def test_interface_by_address_ipv4_and_ipv6(lab, write_config, sink):
    host, _, (local, remote), (local6, remote6) = lab
    daemon = serve(host, write_config, sink, f"""
port: {PORT}
listeners:
  - group: 239.3.3.3
    interface: {remote}
  - group: ff15::3333
    interface: {remote6}
""")
    try:
        joined = [line for line in daemon.lines if "joined" in line]
        assert any("joined 239.3.3.3 on eth0" in line for line in joined), joined
        assert any("joined ff15::3333 on eth0" in line for line in joined), joined
    finally:
        daemon.kill()


# ------------------------------------------------------------------ IPv6

@pytest.mark.parametrize("group", ["ff02::1234", "ff05::1234", "ff15::abcd"])
def test_ipv6_groups_echo_with_the_hop_limit_in_the_trailer(lab, write_config, sink, group):
    from mcast_echo.wire import probe

    host, local_if, _, (local6, remote6) = lab
    daemon = serve(host, write_config, sink,
                   f"group: {group}\nport: {PORT}\ninterface: eth0\nttl: 3\n")
    try:
        wanted = socket.inet_pton(socket.AF_INET6, group).hex()
        joined = [line.split() for line in host.run(["cat", "/proc/net/igmp6"]).stdout
                  .splitlines()]
        assert ["eth0", wanted] in [fields[1:3] for fields in joined], joined  # MLD member
        source = "::" if group.startswith("ff02") else local6
        with v6_client(local_if, source) as sock:
            payload = probe.build_probe(9, 1, time.time_ns(), 192)
            data, sender = ask(sock, payload, (group, PORT, 0, socket.if_nametoindex(local_if)))
        assert data is not None, daemon.log
        echo = probe.check_echo(data, 9)
        assert echo is not None and echo.intact and len(data) == 192
        assert (echo.trailer.group, echo.trailer.ifname, echo.trailer.arrival_ttl) == (
            group, "eth0", 1)
        assert sender[1] == PORT
        if group.startswith("ff02"):
            assert sender[0].startswith("fe80") and sender[3] == socket.if_nametoindex(local_if)
        else:
            assert sender[0] == remote6
    finally:
        daemon.kill()


# ------------------------------------------------------------------ SSM

def test_ssm_answers_a_listed_source_and_never_an_unlisted_one(lab, write_config, sink):
    host, local_if, (local, remote), _ = lab
    unlisted = local.rsplit(".", 1)[0] + ".3"
    ip("addr", "add", f"{unlisted}/24", "dev", local_if)
    daemon = serve(host, write_config, sink,
                   f"group: 232.1.1.1\nport: {PORT}\ninterface: eth0\nsources: [{local}]\n")
    try:
        igmp = host.run(["cat", "/proc/net/mcfilter"]).stdout
        assert "0xe8010101" in igmp.lower().replace(" ", "") or "E8010101" in igmp.upper()
        with v4_client(local) as listed, v4_client(unlisted, timeout=0.5) as stranger:
            for n in range(3):
                assert ask(stranger, b"stranger %d" % n, ("232.1.1.1", PORT))[0] is None
                data, _ = ask(listed, b"listed %d" % n, ("232.1.1.1", PORT))
                assert data == b"listed %d" % n
        count = counters(daemon, sink)
        assert count["echoed"] == 3, count  # the kernel never even delivers the stranger's
    finally:
        daemon.kill()


# ------------------------------------------------------------------ reply modes

OBSERVE = """
import socket, struct, sys
group, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("=4s4si", socket.inet_aton(group), bytes(4), 0))
print("ready", flush=True)
s.settimeout(timeout)
try:
    data, source = s.recvfrom(2000)
    print(data.decode(), source[0], source[1], flush=True)
except socket.timeout:
    print("nothing", flush=True)
"""


@pytest.mark.parametrize("reply", ["unicast", "group", "both"])
def test_each_reply_mode_as_a_second_host_sees_it(write_config, sink, reply):
    with Lan("10.78.0") as lan, Host("rmresp") as responder, Host("rmseen") as observer:
        lan.plug(responder, 2)
        seen_from = lan.plug(observer, 3)
        assert seen_from
        daemon = serve(responder, write_config, sink,
                       f"group: 239.4.4.4\nport: {PORT}\ninterface: eth0\nreply: {reply}\n")
        try:
            with v4_client("10.78.0.1") as sock:
                client_port = sock.getsockname()[1]
                watch = observer.popen(["python3", "-c", OBSERVE, "239.4.4.4",
                                        str(client_port), "1.5"], stdout=subprocess.PIPE,
                                       text=True)
                assert watch.stdout.readline().strip() == "ready"
                sock.sendto(b"hello", ("239.4.4.4", PORT))
                unicast = None
                try:
                    unicast = sock.recvfrom(2000)
                except socket.timeout:
                    pass
                seen = watch.communicate(timeout=10)[0].strip()
            if reply == "group":
                assert unicast is None
            else:
                assert unicast == (b"hello", ("10.78.0.2", PORT))
            if reply == "unicast":
                assert seen == "nothing"
            else:
                assert seen == f"hello 10.78.0.2 {PORT}", seen
        finally:
            daemon.kill()


# ------------------------------------------------------------------ scale

def test_a_thousand_groups_on_one_port_join_fast_and_all_echo(lab, write_config, sink):
    host, _, (local, remote), _ = lab
    groups = [f"239.10.{n // 250}.{n % 250 + 1}" for n in range(1000)]
    listeners = "".join(f"  - group: {group}\n" for group in groups)
    t0 = time.monotonic()
    daemon = DaemonProcess(write_config(f"port: {PORT}\ninterface: eth0\nlisteners:\n"
                                        f"{listeners}"), host=host, env=sink.env)
    try:
        daemon.wait_for("ready:", timeout=30)
        started = time.monotonic() - t0
        first = next(line for line in daemon.lines if "joined 239.10." in line)
        last = [line for line in daemon.lines if "joined 239.10." in line][-1]
        joining = _seconds(last) - _seconds(first)
        assert len(host.igmp_groups()) >= 1000
        replies = set()
        with v4_client(local, timeout=0.2) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            for start in range(0, 1000, 50):  # 50 in flight at a time
                for group in groups[start:start + 50]:
                    sock.sendto(group.encode(), (group, PORT))
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline and len(replies) < start + 50:
                    try:
                        replies.add(sock.recv(100).decode())
                    except socket.timeout:
                        break
        print(f"1,000 groups: ready {started:.2f} s after exec, joins took {joining:.3f} s, "
              f"{len(replies)} echoed, daemon RSS {daemon.rss_kib()} KiB")
        assert joining < allowance(1.0, 3), joining
        assert replies == set(groups)
        status = sink.wait(lambda f: "READY" in f, what="READY")["STATUS"]
        assert status.startswith("1000 listeners, 1000 joined"), status[:200]
    finally:
        daemon.kill()


def _seconds(line: str) -> float:
    clock = line.split()[1]  # 2026-11-29 16:31:26,359 INFO ...
    hours, minutes, rest = clock.split(":")
    seconds, millis = rest.split(",")
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


# ------------------------------------------------------------------ reload

def test_a_reload_that_adds_and_removes_listeners_loses_nothing_on_an_unchanged_one(
        lab, write_config, sink):
    import signal

    host, _, (local, remote), _ = lab
    base = f"port: {PORT}\ninterface: eth0\nrate_limit: off\nlisteners:\n  - group: 239.5.5.1\n"
    daemon = serve(host, write_config, sink, base + "  - group: 239.5.5.2\n")
    try:
        sent = received = 0
        stop = threading.Event()

        def reload_once(text: str) -> None:
            """A reload once 100 more echoes came: each one happens under load."""
            echoed = received
            wait_until(lambda: received >= echoed + 100, 2, "100 echoes before a reload")
            mark = daemon.mark()
            write_config(text)
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("reloaded:", start=mark, timeout=2)

        def reload_twice() -> None:
            reload_once(base + "  - group: 239.5.5.3\n  - group: 239.5.5.4\n")
            reload_once(base + "  - group: 239.5.5.2\n")
            stop.set()

        with v4_client(local, timeout=0.5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            reloader = threading.Thread(target=reload_twice)
            reloader.start()
            t0 = time.monotonic()
            next_send = t0
            while time.monotonic() - t0 < 2.0:  # 1,000 probes a second for 2 s
                now = time.monotonic()
                if now >= next_send:
                    sock.sendto(struct.pack("!I", sent), ("239.5.5.1", PORT))
                    sent += 1
                    next_send += 0.001
                sock.setblocking(False)
                try:
                    while True:
                        sock.recv(100)
                        received += 1
                except BlockingIOError:
                    pass
                sock.setblocking(True)
            sock.settimeout(0.5)
            try:
                while received < sent:
                    sock.recv(100)
                    received += 1
            except socket.timeout:
                pass
            reloader.join(5)
        assert stop.is_set()
        assert daemon.log.count("reloaded:") == 2
        assert "left 239.5.5.2 on eth0" in daemon.log and "joined 239.5.5.3 on eth0" in daemon.log
        print(f"reload under load: {sent} probes to the unchanged group, {received} echoed")
        assert sent >= 1500 and received == sent
    finally:
        daemon.kill()


def test_ipv6_listeners_are_shown_with_brackets(lab, write_config, sink):
    host, _, _, _ = lab
    daemon = serve(host, write_config, sink,
                   f"group: ff15::77\nport: {PORT}\ninterface: eth0\nrecv_buffer: 1MiB\n")
    try:
        status = sink.wait(lambda f: "READY" in f, what="READY")["STATUS"]
        assert status.startswith(f"[ff15::77]:{PORT} on eth0: received 0"), status
        assert f"[ff15::77]:{PORT}: receive buffer: requested 1 MiB" in daemon.log
    finally:
        daemon.kill()


def test_4096_listeners_by_route_never_stall_the_echo(lab, write_config, sink):
    """#18.8: at the largest supported config (4,096 listeners, each found by the route to
    its group, in a file past the old 1 MiB cap) neither the membership checks nor a reload
    stop the echo: the longest gap a steady client sees during a reload is a fraction of
    the time the reload takes (before: the whole of it), and during checks as small."""
    import signal

    from mcast_echo.yamlsafe import MAX_FILE_BYTES
    from scalelab import StallMeter, listeners_config

    host, local_if, (local, remote), _ = lab
    allow = "allow: [" + ", ".join(f"10.{i}.0.0/16" for i in range(60)) + ", 10.68.0.0/16]\n"
    text = listeners_config(4096, PORT, each=allow)
    assert 1 << 20 < len(text) <= MAX_FILE_BYTES
    path = write_config(text)
    daemon = DaemonProcess(path, host=host, env=sink.env)
    meter = None
    try:
        status = sink.wait(lambda f: "READY" in f, 60, "READY")["STATUS"]
        assert status.startswith("4096 listeners, 4096 joined"), status[:200]
        meter = StallMeter(local, "239.20.0.1", PORT, seconds=40)
        meter.wait_echoes(100, 10)
        start = time.monotonic()
        meter.wait_echoes(1000, 15)  # 2 s and more: four rounds of checks at least
        checks = meter.worst_gap(start, time.monotonic())
        mark = daemon.mark()
        path.write_text(text.replace("interface: null", "interface: null\nttl: 2"))
        start = time.monotonic()
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for("reloaded:", start=mark, timeout=60)
        took = time.monotonic() - start
        meter.wait_echoes(100, 10)
        reload_gap = meter.worst_gap(start, time.monotonic())
        print(f"4,096 listeners by route ({len(text)} bytes): worst echo gap {checks * 1000:.0f}"
              f" ms during checks, {reload_gap * 1000:.0f} ms during a {took:.2f} s reload")
        assert reload_gap < took / 3
        assert checks < took / 3
        meter.close()
        # #18.9: the interface deleted and re-created: echo back well within 2 s (it took
        # 3.4 s at 4,096 listeners when a round of checks ran in one go, with backoff).
        ip("link", "del", local_if)
        start = time.monotonic()
        veth(local_if, f"{local}/24", host, "eth0", f"{remote}/24")
        meter = StallMeter(local, "239.20.0.1", PORT, seconds=10)
        meter.wait_echoes(1, 10)
        back = meter.echoes[0] - start
        print(f"interface re-created: echo back in {back * 1000:.0f} ms")
        assert back < 2.0
        # every group back (the first answers before the last is rejoined), as the kernel says
        wait_until(lambda: sum(1 for i, _ in host.igmp_groups() if i == "eth0") >= 4096, 30,
                   step=0.1)
        daemon.send_signal(signal.SIGHUP)  # and a stop while that file is being read:
        daemon.send_signal(signal.SIGTERM)  # not held up by it, every group left
        assert daemon.stop(timeout=took / 2) == 0
        assert daemon.log.count("left 239.20.") == 4096
    finally:
        if meter is not None:
            meter.close()
        daemon.kill()


def test_interface_all_writes_one_line_per_interface_event_not_one_per_listener(
        lab, write_config, sink):
    """#18.11: an interface that comes (or goes) is one log line however many 'interface:
    all' listeners join it (the others counted in the next line), and STATUS is right."""
    host, _, _, _ = lab
    groups = [f"239.6.0.{n}" for n in range(1, 41)]
    daemon = serve(host, write_config, sink, f"port: {PORT}\ninterface: all\nlisteners:\n"
                   + "".join(f"  - group: {group}\n" for group in groups))
    second = f"vy{_labs}"
    try:
        mark = daemon.mark()
        veth(second, f"10.70.{_labs}.1/24", host, "eth1", f"10.70.{_labs}.2/24")
        wait_until(lambda: sum(1 for i, _ in host.igmp_groups() if i == "eth1") >= 40, 5)
        lines = [line for line in daemon.lines[mark:] if "on eth1" in line]
        assert len(lines) == 1, lines
        status = counters_line(daemon, sink)
        assert status.startswith("40 listeners, 40 joined"), status
    finally:
        daemon.kill()
        unplug(second)


def test_status_says_which_joins_are_pending():
    """#18.11: a listener whose join is still to be tried is "pending", not "0 joined"."""
    from mcast_echo.daemon.policy import MAX_TRACKED_SOURCES
    from mcast_echo.daemon.responder import GroupResponder
    from mcast_echo.daemon.service import Daemon
    from mcast_echo.schema import Config, Listener

    listeners = [Listener(group=f"239.7.0.{n}", port=PORT) for n in range(1, 11)]
    daemon = Daemon(Config(path="-", listeners=tuple(listeners)))
    daemon.responders = [GroupResponder(listener, "h", daemon.drop_log, daemon.paths,
                                        daemon.interface_log, MAX_TRACKED_SOURCES,
                                        daemon.delayed)
                         for listener in listeners]
    line = daemon.status_line()
    assert line.startswith("10 listeners, 0 joined, 10 joins pending"), line
    assert daemon.responders[0].status() == \
        f"239.7.0.1:{PORT} join pending (on a route to the group)"


def test_ipv6_link_scope_listener_waits_for_its_interface_like_an_ipv4_one(
        lab, write_config, sink):
    """#20.2: ff02::4242 on an absent eth1 -- check-config said it would wait, serve exited 69
    ("no such device") and a reload that added one was refused. All three wait now: the
    socket (bound with the interface's index as scope) is made when the interface appears."""
    import signal

    host, _, _, _ = lab
    config = write_config(f"port: {PORT}\nlisteners:\n  - {{group: ff02::4242, interface: eth1}}\n"
                          "  - {group: 239.4.2.42, interface: eth0}\n")
    checked = host.run([sys.executable, "-m", "mcast_echo", "check-config", "-c", str(config)])
    assert checked.returncode == 0, checked.stderr
    assert "interface eth1 does not exist on this host now; the daemon would wait" in (
        checked.stdout + checked.stderr)
    daemon = serve(host, write_config, sink, config.read_text())
    try:
        status = sink.wait(lambda f: "READY" in f, what="READY")["STATUS"]
        assert f"[ff02::4242]:{PORT} waiting for eth1 (no such device)" in status, status
        # a reload that adds another one on an absent interface is applied, not refused
        config.write_text(config.read_text() + "  - {group: ff02::4243, interface: eth9}\n")
        mark = daemon.mark()
        daemon.send_signal(signal.SIGHUP)
        line = daemon.wait_for("reload", start=mark + 1)  # after "SIGHUP: reloading"
        assert "reloaded:" in line and f"[ff02::4243]:{PORT} waiting for eth9" in line, line
        second = f"vy{_labs}"
        veth(second, f"10.70.{_labs}.1/24", host, "eth1", f"10.70.{_labs}.2/24")
        daemon.wait_for("joined ff02::4242 on eth1 after waiting", timeout=10)
        with v6_client(second) as sock:
            data, sender = ask(sock, b"here", ("ff02::4242", PORT, 0,
                                               socket.if_nametoindex(second)))
        assert data == b"here" and sender[0].startswith("fe80"), (data, daemon.log)
        assert daemon.proc.poll() is None
    finally:
        daemon.kill()
