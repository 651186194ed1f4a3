"""One responder per group and port, unless the config says sharing is intended (issue 12,
item 9).

Reported: a second instance on the same group and port started silently and every echo
came back twice (ping showed `+2 duplicates`). Now the socket is bound without SO_REUSEADDR
unless `share_port: true`, so the kernel refuses the second bind, and the message names the
process that holds the port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from clients import sender
from daemonproc import DaemonProcess
from mcast_echo.net import portowner

GROUP = "224.3.29.71"
PORT = 9999


def echoes(payload: bytes, quiet: float = 0.3) -> list[bytes]:
    """Every reply to one datagram sent to the group on lo, until *quiet* s pass without one."""
    replies = []
    with sender("127.0.0.1", timeout=quiet) as sock:
        sock.sendto(payload, (GROUP, PORT))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                replies.append(sock.recv(2048))
            except socket.timeout:
                break
    return replies


def test_a_second_responder_on_the_same_group_and_port_is_refused(write_config):
    path = write_config("interface: lo\n")
    with DaemonProcess(path) as first:
        first.wait_for("ready:")
        second = DaemonProcess(path)
        assert second.proc.wait(10) == 69
        second.stop()
        line = second.wait_for("cannot bind")
        assert f"{GROUP}:{PORT}: Address already in use by pid {first.pid} (" in line, line
        assert "python -m mcast_echo serve -c " in line and "share_port: true" in line, line
        assert echoes(b"once") == [b"once"]  # not doubled
        assert first.proc.poll() is None


def test_the_seeds_wildcard_server_on_the_port_is_named_too(write_config):
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the seed did
    squatter.bind(("", PORT))
    try:
        daemon = DaemonProcess(write_config("interface: lo\n"))
        assert daemon.proc.wait(10) == 69
        daemon.stop()
        assert f"Address already in use by pid {os.getpid()}" in daemon.wait_for("cannot bind")
    finally:
        squatter.close()


def test_share_port_lets_two_responders_answer_when_that_is_intended(write_config):
    path = write_config("interface: lo\nshare_port: true\n")
    with DaemonProcess(path) as first, DaemonProcess(path) as second:
        first.wait_for("ready:")
        second.wait_for("ready:")
        assert echoes(b"twice") == [b"twice", b"twice"]


def test_a_reload_to_another_interface_keeps_the_socket_and_moves_the_membership(
        responder_host, write_config):
    host, local, remote = responder_host
    path = write_config("interface: lo\n")
    with DaemonProcess(path) as daemon:
        daemon.wait_for("ready:")
        assert echoes(b"on lo") == [b"on lo"]
        mark = daemon.mark()
        write_config(f"interface: {local}\n")
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for("reloaded:", start=mark)
        assert "reload failed" not in daemon.log
        daemon.wait_for(f"left {GROUP} on lo", start=mark)
        daemon.wait_for(f"joined {GROUP} on ", start=mark)
        reply = host.python(
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, "
            f"socket.inet_aton('{remote}')); "
            "s.settimeout(2); "
            f"s.sendto(b'over the veth', ('{GROUP}', {PORT})); print(s.recv(100))")
        assert reply.stdout.strip() == "b'over the veth'"


def test_the_holders_command_line_is_cut_between_words_at_any_checkout_depth(tmp_path):
    """#20.1/#20.13: from a clone at a long path the venv's python filled the 80 characters
    and the message ended mid-path, before "mcast_echo serve"."""
    venv = "/tmp/x/home/user/src/github.com/example/mcast-echo-longpath/.venv"
    config = "/tmp/pytest-of-root/pytest-12/test_a_second_responder_on_the0/mcast-echo.yaml"
    (tmp_path / "net").mkdir()
    (tmp_path / "net/udp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "  7: 471D03E0:270F 00000000:0000 07 00000000:00000000 00:00000000 00000000     0  "
        "      0 4242 2 0000000000000000 0\n")
    (tmp_path / "812/fd").mkdir(parents=True)
    (tmp_path / "812/fd/3").symlink_to("socket:[4242]")
    argv = [f"{venv}/bin/python", "-m", "mcast_echo", "serve", "-c", config, "--log-level",
            "debug", "--interface", "lo", "--pidfile", "/run/mcast-echo/a-rather-long.pid"]
    (tmp_path / "812/cmdline").write_bytes(b"\0".join(w.encode() for w in argv) + b"\0")
    assert portowner.holder(GROUP, PORT, proc_root=str(tmp_path)) == (
        "pid 812 (python -m mcast_echo serve -c .../mcast-echo.yaml --log-level debug "
        "--interface ...)")
    assert portowner.shown_command(["/usr/bin/mcast-echo", "serve", "-c", "/etc/a.yaml"]) == (
        "mcast-echo serve -c /etc/a.yaml")
    assert portowner.shown_command(["bad\x1b[31m", "x"]) == "bad?[31m x"
    assert portowner.shown_command([""]) == "?"


def test_a_privileged_port_as_a_user_says_why_and_the_fixes():
    """#20.3: serve said only "Permission denied" for a port below 1024 run as a user."""
    from loadlab import AsUser, can_become_another_user

    if not can_become_another_user():
        pytest.skip("no other user to run the daemon as (setpriv, or a readable runtime)")
    nobody = AsUser(None)
    with tempfile.TemporaryDirectory(dir="/tmp") as readable:  # pytest's tmp_path is root's
        os.chmod(readable, 0o755)
        config = os.path.join(readable, "low.yaml")
        with open(config, "w") as f:
            f.write("interface: lo\nport: 999\n")
        os.chmod(config, 0o644)
        done = subprocess.run(nobody.command([sys.executable, "-m", "mcast_echo", "serve", "-c",
                                              config]),
                              env=nobody.environ(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 69, done.stderr
    assert (f"cannot bind {GROUP}:999: Permission denied: port 999 is privileged (below "
            "net.ipv4.ip_unprivileged_port_start = 1024): run as root, give the daemon "
            "CAP_NET_BIND_SERVICE (the unit: AmbientCapabilities= and CapabilityBoundingSet= "
            "CAP_NET_BIND_SERVICE), lower that sysctl, or use a port of 1024 or more"
            ) in done.stderr, done.stderr
