"""sd_notify, against a real AF_UNIX datagram socket standing in for systemd."""

import logging
import os
import signal
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from daemonproc import DaemonProcess
from mcast_echo.daemon.notify import Notifier
from netlab import local_igmp_groups

SO_PASSCRED = getattr(socket, "SO_PASSCRED", 16)
SCM_CREDENTIALS = getattr(socket, "SCM_CREDENTIALS", 2)
GROUP = "224.3.29.71"


class FakeSystemd:
    """Receives notify datagrams with the sender's credentials (SCM_CREDENTIALS)."""

    def __init__(self) -> None:
        self.name = f"@mcast-echo-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_PASSCRED, 1)
        self.sock.bind("\0" + self.name[1:])

    def receive(self, timeout: float = 5) -> tuple[dict, int]:
        """One message as {field: value}, and the sender's pid."""
        self.sock.settimeout(timeout)
        data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == SCM_CREDENTIALS:
                pid = struct.unpack("=iII", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode("utf-8").splitlines())
        return fields, pid

    def receive_until(self, field: str, timeout: float = 5) -> list[tuple[dict, float]]:
        """Every message (with its arrival time) up to the first that has *field*."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            fields, _ = self.receive(max(0.01, deadline - time.monotonic()))
            seen.append((fields, time.monotonic()))
            if field in fields:
                return seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd():
    fake = FakeSystemd()
    yield fake
    fake.close()


@pytest.fixture
def daemon_on_lo(systemd, write_config):
    started = []

    def start(extra_env=None, config="interface: lo\n"):
        env = {"NOTIFY_SOCKET": systemd.name, **(extra_env or {})}
        daemon = DaemonProcess(write_config(config), env=env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def test_ready_only_after_the_group_is_joined(systemd, daemon_on_lo):
    t0 = time.monotonic()
    daemon = daemon_on_lo()
    fields, pid = systemd.receive()
    elapsed = time.monotonic() - t0
    assert fields["READY"] == "1"
    assert ("lo", GROUP) in local_igmp_groups()  # already a member when READY=1 arrives
    assert pid == daemon.pid  # SCM_CREDENTIALS: the daemon itself told us
    assert fields["MAINPID"] == str(daemon.pid)
    assert fields["STATUS"] == f"{GROUP}:9999 on lo: received 0, echoed 0, dropped 0"
    print(f"exec to READY=1: {elapsed * 1000:.0f} ms, RSS {daemon.rss_kib()} KiB")


def test_status_is_refreshed_and_counts(systemd, daemon_on_lo):
    daemon = daemon_on_lo(config="interface: lo\nstatus_interval: 1\n")
    systemd.receive()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                          socket.inet_aton("127.0.0.1"))
        client.settimeout(2)
        for _ in range(3):
            client.sendto(b"count me", (GROUP, 9999))
            client.recvfrom(100)
    fields, pid = systemd.receive(timeout=3)
    assert fields == {"STATUS": f"{GROUP}:9999 on lo: received 3, echoed 3, dropped 0"}
    assert pid == daemon.pid


def test_watchdog_cadence_is_half_the_timeout(systemd, daemon_on_lo):
    daemon_on_lo({"WATCHDOG_USEC": "400000"})
    systemd.receive_until("READY")
    times = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        fields, _ = systemd.receive(timeout=1)
        if "WATCHDOG" in fields:
            times.append(time.monotonic())
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) >= 5, times
    # every 0.2 s: a busy machine may delay one ping, not the cadence (the middle gap)
    assert 0.1 < sorted(gaps)[len(gaps) // 2] < 0.35, gaps


def test_no_watchdog_for_another_pid(systemd, daemon_on_lo):
    daemon_on_lo({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    messages = systemd.receive_until("READY")
    with pytest.raises(socket.timeout):
        while True:
            fields, _ = systemd.receive(timeout=0.6)
            assert "WATCHDOG" not in fields
            messages.append(fields)


def test_a_service_manager_that_does_not_read_never_stalls_the_loop(systemd, daemon_on_lo):
    """systemd's queue holds net.unix.max_dgram_qlen messages: past that a blocking send would
    hang the daemon. WATCHDOG=1 every 50 ms fills it in well under a second; the daemon says so
    once and goes on echoing, and still stops on SIGTERM (STOPPING=1 waits a bounded time)."""
    daemon = daemon_on_lo({"WATCHDOG_USEC": "100000"})  # nobody reads systemd.sock from here on
    daemon.wait_for("notify socket is full", timeout=10)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                          socket.inet_aton("127.0.0.1"))
        client.settimeout(2)
        for n in range(20):  # while WATCHDOG=1 keeps finding the queue full
            client.sendto(b"still here %d" % n, (GROUP, 9999))
            assert client.recvfrom(100)[0] == b"still here %d" % n
    assert daemon.log.count("notify socket is full") == 1, daemon.log
    daemon.send_signal(signal.SIGTERM)
    assert daemon.stop(timeout=5) == 0


def test_stopping_on_sigterm(systemd, daemon_on_lo):
    daemon = daemon_on_lo()
    systemd.receive_until("READY")
    daemon.send_signal(signal.SIGTERM)
    fields, pid = systemd.receive()
    assert fields["STOPPING"] == "1" and pid == daemon.pid
    assert daemon.stop() == 0


def test_reload_sends_reloading_then_ready(systemd, daemon_on_lo, write_config):
    daemon = daemon_on_lo()
    systemd.receive_until("READY")
    write_config("interface: lo\ngroup: 224.3.29.80\n")
    daemon.send_signal(signal.SIGHUP)
    first, _ = systemd.receive()
    assert first["RELOADING"] == "1" and int(first["MONOTONIC_USEC"]) > 0
    second = systemd.receive_until("READY")[-1][0]
    assert second["STATUS"].startswith("224.3.29.80:9999 on lo")


def test_broken_reload_says_so_in_status(systemd, daemon_on_lo, write_config):
    daemon = daemon_on_lo()
    systemd.receive_until("READY")
    path = write_config("interface: lo\nttl: 999\n")
    daemon.send_signal(signal.SIGHUP)
    ready = systemd.receive_until("READY")[-1][0]
    assert ready["STATUS"] == (f"{GROUP}:9999 on lo: received 0, echoed 0, dropped 0 | reload "
                               f"failed (1 error(s), see the log): {path}:2: ttl: 999 is out of "
                               "range 0..255; still serving the previous config")


def test_non_latin1_status_arrives_as_utf8(systemd, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.name)
    Notifier().status("grüße 組 ✓")
    assert systemd.receive()[0] == {"STATUS": "grüße 組 ✓"}


def test_without_notify_socket_everything_is_a_no_op(monkeypatch, caplog):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    notifier.ready("x")
    notifier.status("y")
    notifier.stopping()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_send_failure_is_logged_once(systemd, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.name)
    notifier = Notifier()
    systemd.close()  # systemd went away: sends now fail with ECONNREFUSED
    notifier.status("a")
    notifier.status("b")
    errors = [r for r in caplog.records if "sd_notify failed" in r.getMessage()]
    assert len(errors) == 1


def test_watchdog_interval_from_environment():
    from mcast_echo.daemon.notify import _watchdog_interval
    assert _watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert _watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) \
        == 15.0
    assert _watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert _watchdog_interval({}) is None


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3") or subprocess.run(
    ["/usr/bin/python3", "-c", "import sdnotify"], capture_output=True).returncode != 0,
    reason="Debian's python3-sdnotify (0.3.1) is not installed")
def test_debian_sdnotify_0_3_1_sends_non_latin1_status(systemd):
    """The same wrapper over Debian 12's sdnotify release."""
    src = str(Path(__file__).resolve().parent.parent / "src")
    code = "from mcast_echo.daemon.notify import Notifier; Notifier().status('grüße 組 ✓')"
    subprocess.run(["/usr/bin/python3", "-c", code], check=True, timeout=30,
                   env={**os.environ, "NOTIFY_SOCKET": systemd.name, "PYTHONPATH": src})
    assert systemd.receive()[0] == {"STATUS": "grüße 組 ✓"}
