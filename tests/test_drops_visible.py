"""A daemon that loses datagrams must not look healthy (#18.10, #19.4).

The kernel's receive-buffer drops of every socket (each listener's, the ssmping
listener's) show in /metrics and STATUS; every labelled counter the daemon knows of is in
/metrics from the start, at 0, so `increase(...) > 0` sees the first drop; and the drop
reasons have one home (echosink.DROP_REASONS) that the paths and the metrics share.

The daemon runs in a netlab Host; the flood comes from this namespace, bounded by count,
while the daemon is stopped (SIGSTOP), so its tiny receive buffer must overflow.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

from daemonproc import DaemonProcess
from mcast_echo.daemon.echosink import DROP_REASONS, DROP_TEXT
from mcast_echo.daemon.mesh import DROP_REASONS as MESH_DROP_REASONS
from mcast_echo.daemon.mesh import MESH_ONLY_REASONS
from mcast_echo.net.udpstats import socket_drops
from test_metrics import scrape, scrape_until, value

SRC = Path(__file__).resolve().parent.parent / "src" / "mcast_echo"
SSMPING_PORT = 4321
FLOOD = 300  # datagrams to the listener; a 4 KiB buffer holds a handful
CHUNK = 500  # datagrams sent at once: under the 1,000 of a device backlog, so only the
#              socket drops any


def ssmping_flood() -> int:
    """Datagrams that overflow the ssmping socket's buffer, net.core.rmem_default (a small
    datagram takes ~830 bytes of it): 600 for the usual 208 KiB, at most 20,000."""
    with open("/proc/sys/net/core/rmem_default") as f:
        return min(20_000, max(600, int(f.read()) // 400))


def config(remote: str) -> str:
    return f"""
listeners:
  - group: 239.7.9.1
    port: 5000
    interface: eth0
    recv_buffer: 4096
  - group: 239.7.9.2
    port: 5001
    interface: eth0
ssmping: {{port: {SSMPING_PORT}}}
metrics:
  listen: "{remote}:9101"
log_level: debug
status_interval: 1
"""


def sender(local: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
    sock.bind((local, 0))
    return sock


def kernel_drops(series, name: str, **labels: str) -> float:
    found = value(series, name, **labels)
    assert found is not None, (name, labels)
    return found


def test_socket_drops_counts_what_the_kernel_lost():
    """The counter itself, on a socket of this namespace: what was not queued was counted."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's floor
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        assert socket_drops(receiver) == 0
        for _ in range(50):
            client.sendto(b"x" * 100, receiver.getsockname())
        queued = 0
        while True:
            try:
                receiver.recv(2048)
            except BlockingIOError:
                break
            queued += 1
        drops = socket_drops(receiver)
        assert 0 < queued < 50 and drops == 50 - queued
    assert socket_drops(receiver) is None  # closed (by a reload, while a scrape reads it)


def test_kernel_drops_show_in_metrics_and_status(responder_host, write_config):
    host, local, remote = responder_host
    listen = f"{remote}:9101"
    one = dict(group="239.7.9.1", port="5000", interface="eth0")
    two = dict(group="239.7.9.2", port="5001", interface="eth0")
    with DaemonProcess(write_config(config(remote)), host=host) as daemon:
        daemon.wait_for("ready:")
        before = scrape(listen)
        assert kernel_drops(before, "mcast_echo_kernel_drops_total", **one) == 0
        assert kernel_drops(before, "mcast_echo_ssmping_kernel_drops_total",
                            port=str(SSMPING_PORT), family="ipv4") == 0
        ssmping_sent = ssmping_flood()
        daemon.send_signal(signal.SIGSTOP)
        try:
            with sender(local) as sock:
                for n in range(FLOOD):
                    sock.sendto(b"%08d" % n, ("239.7.9.1", 5000))
                for n in range(ssmping_sent):
                    sock.sendto(b"not a request %08d" % n, (remote, SSMPING_PORT))
                    if n % CHUNK == CHUNK - 1:
                        time.sleep(0.001)  # lets the device backlog drain (not a wait)
        finally:
            daemon.send_signal(signal.SIGCONT)
        mark = daemon.mark()

        # Every datagram was either read by the daemon or dropped by the kernel.
        def settled(series) -> bool:
            listener = (value(series, "mcast_echo_received_datagrams_total", **one) or 0) + \
                (value(series, "mcast_echo_kernel_drops_total", **one) or 0)
            ssmping = (value(series, "mcast_echo_ssmping_received_datagrams_total",
                             port=str(SSMPING_PORT)) or 0) + \
                (value(series, "mcast_echo_ssmping_kernel_drops_total",
                       port=str(SSMPING_PORT), family="ipv4") or 0)
            return listener == FLOOD and ssmping == ssmping_sent

        after = scrape_until(listen, settled, timeout=10)
        assert settled(after), {k: v for k, v in after.items() if "drops" in k[0]}
        lost = int(kernel_drops(after, "mcast_echo_kernel_drops_total", **one))
        ssmping_lost = int(kernel_drops(after, "mcast_echo_ssmping_kernel_drops_total",
                                        port=str(SSMPING_PORT), family="ipv4"))
        assert lost > 0 and ssmping_lost > 0
        assert kernel_drops(after, "mcast_echo_kernel_drops_total", **two) == 0
        print(f"kernel drops: listener {lost} of {FLOOD}, ssmping {ssmping_lost} of "
              f"{ssmping_sent}")

        status = daemon.wait_for("status: ", start=mark, timeout=5)
        listener_status = next(part for part in status.split("; ") if "239.7.9.1:5000" in part)
        assert f"kernel drops {lost}" in listener_status, status
        second_status = next(part for part in status.split("; ") if "239.7.9.2:5001" in part)
        assert "kernel drops" not in second_status, status  # none: nothing to say
        ssmping_status = next(part for part in status.split("; ") if "ssmping :" in part)
        assert ssmping_status.endswith(f", kernel drops {ssmping_lost}"), status
        assert daemon.stop() == 0
        assert re.search(r"totals: .*239\.7\.9\.1:5000 .*kernel drops \d+", daemon.log)


def test_every_known_counter_is_there_at_zero(responder_host, write_config):
    """A fresh daemon: every drop reason of every listener and of the ssmping listener, and
    the ssmping listener's other counters, at 0 before anything happened."""
    host, _local, remote = responder_host
    listen = f"{remote}:9101"
    with DaemonProcess(write_config(config(remote)), host=host) as daemon:
        daemon.wait_for("ready:")
        series = scrape(listen)
        for labels in (dict(group="239.7.9.1", port="5000", interface="eth0"),
                       dict(group="239.7.9.2", port="5001", interface="eth0")):
            for reason in DROP_REASONS:
                assert value(series, "mcast_echo_dropped_datagrams_total", **labels,
                             reason=reason) == 0, (labels, reason)
            assert value(series, "mcast_echo_kernel_drops_total", **labels) == 0
        port = str(SSMPING_PORT)
        for reason in (*DROP_REASONS, "malformed", "ignored"):
            assert value(series, "mcast_echo_ssmping_dropped_datagrams_total", port=port,
                         reason=reason) == 0, reason
        assert value(series, "mcast_echo_ssmping_received_datagrams_total", port=port) == 0
        for dialect in ("ssmping", "rfc6450"):
            assert value(series, "mcast_echo_ssmping_requests_total", port=port,
                         dialect=dialect) == 0
        for to in ("unicast", "group"):
            assert value(series, "mcast_echo_ssmping_replies_total", port=port, to=to) == 0
        for family in ("ipv4", "ipv6"):
            assert value(series, "mcast_echo_ssmping_kernel_drops_total", port=port,
                         family=family) == 0
        # Nothing but zeros: no series of these families was made up beyond the known ones.
        dropped = [k for k in series if k[0] == "mcast_echo_dropped_datagrams_total"]
        assert len(dropped) == 2 * len(DROP_REASONS)
        assert daemon.stop() == 0


# ------------------------------------------------------------------ one home for the reasons

# Where the code names a reason: drop("x", ...), drops[i] = "x", refused = "x", the ssmping
# listener's _drop("x", ...); and policy.py's verdicts, return "x" (or ... else "x").
REASON_LITERALS = re.compile(r'(?:\bdrop\(|drops\[i\] = |refused = |_drop\()"([a-z-]+)"')
VERDICT_LITERALS = re.compile(r'(?:return |else )"([a-z-]+)"')


# The mesh counts into a metric of its own (mcast_echo_mesh_dropped_datagrams_total), with
# its own list, mesh.DROP_REASONS; it names a reason as drop("x") or counts["dropped x"].
MESH_FILES = ("mesh.py", "meshpeers.py")
MESH_REASON_LITERALS = re.compile(r'(?:_drop\("|counts\["dropped )([a-z-]+)"')


def test_every_reason_the_code_counts_is_a_known_one():
    """A reason counted somewhere but missing from DROP_REASONS would appear in /metrics
    only at its first drop: adding one is a line in echosink.DROP_REASONS."""
    used = set(VERDICT_LITERALS.findall((SRC / "daemon" / "policy.py").read_text()))
    for path in (SRC / "daemon").glob("*.py"):
        if path.name not in MESH_FILES:
            used |= set(REASON_LITERALS.findall(path.read_text()))
    assert {"source", "ssm", "acl", "rate", "truncated", "size", "send-error", "recv-error",
            "loop"} <= used  # the scan sees them all
    assert used <= set(DROP_REASONS), used - set(DROP_REASONS)
    assert set(DROP_TEXT) <= set(DROP_REASONS)
    assert len(set(DROP_REASONS)) == len(DROP_REASONS)


def test_every_reason_the_mesh_counts_is_in_its_list_and_shares_the_listeners_names():
    """The mesh's drops are in its own metric from the first scrape (mesh.DROP_REASONS);
    a reason that means what a listener's does carries the listener's name, so only the
    mesh's own (a datagram that is no mesh probe, a duplicate, ...) are new words."""
    used = set()
    for name in MESH_FILES:
        used |= set(MESH_REASON_LITERALS.findall((SRC / "daemon" / name).read_text()))
    policy = set(VERDICT_LITERALS.findall((SRC / "daemon" / "policy.py").read_text()))
    used |= policy - {"ssm"}  # the mesh's policy has no SSM sources
    assert {"malformed", "duplicate", "late", "peers-full", "recv-error", "unresolved",
            "send-error", "source", "acl", "rate"} <= used  # the scan sees them all
    assert used <= set(MESH_DROP_REASONS), used - set(MESH_DROP_REASONS)
    assert len(set(MESH_DROP_REASONS)) == len(MESH_DROP_REASONS)
    shared = set(MESH_DROP_REASONS) - set(MESH_ONLY_REASONS)
    assert shared <= set(DROP_REASONS), shared - set(DROP_REASONS)
    assert not set(MESH_ONLY_REASONS) & set(DROP_REASONS)
