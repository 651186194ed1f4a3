"""End to end: the daemon on one namespaced host, a plain socket client on another."""

import signal
import subprocess
import time

import pytest

from clients import drain, echo, sender
from daemonproc import DaemonProcess
from yardstick import allowance

GROUP = "224.3.29.71"
PORT = 9999


@pytest.fixture
def running(responder_host, write_config):
    host, local, remote = responder_host
    config = write_config(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n")
    daemon = DaemonProcess(config, host=host)
    daemon.wait_for("ready:")
    yield daemon, host, local, remote, write_config
    daemon.kill()


@pytest.mark.parametrize("size", [0, 1, 1400, 65507])
def test_echo_is_byte_identical(running, size):
    daemon, host, local, remote, _ = running
    payload = bytes((i * 7 + size) % 256 for i in range(size))
    with sender(local) as sock:
        reply = echo(sock, payload, GROUP, PORT)
    assert reply is not None, daemon.log
    data, source = reply
    assert data == payload
    assert source == (remote, PORT)


def test_seed_client_payload(running):
    """The seed client sent b'data' and printed the reply: that still works."""
    daemon, host, local, remote, _ = running
    with sender(local) as sock:
        assert echo(sock, b"data", GROUP, PORT) == (b"data", (remote, PORT))


def test_empty_datagrams_do_not_stop_it(running):
    daemon, host, local, remote, _ = running
    with sender(local) as sock:
        for _ in range(20):
            assert echo(sock, b"", GROUP, PORT) == (b"", (remote, PORT))
        assert echo(sock, b"still here", GROUP, PORT) == (b"still here", (remote, PORT))
    assert daemon.proc.poll() is None


def test_another_group_on_the_same_port_gets_no_echo(running):
    daemon, host, local, remote, _ = running
    # A second socket on the responder host joins another group: datagrams to that group on
    # the daemon's port now reach the host, and the daemon must still not answer them. (It
    # binds a port of its own: the daemon's, held without share_port, would be refused.)
    listener = host.popen(["python3", "-c", """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4si", socket.inet_aton("224.3.29.72"), bytes(4), 0))
print("joined", flush=True)
sys.stdin.read()  # holds the membership until the test closes stdin
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline() == "joined\n"
        with sender(local) as sock:
            assert echo(sock, b"not for you", "224.3.29.72", PORT, timeout=0.5) is None
            assert echo(sock, b"for you", GROUP, PORT) == (b"for you", (remote, PORT))
    finally:
        listener.kill()
        listener.wait()


def test_unicast_to_the_port_gets_no_echo(running):
    daemon, host, local, remote, _ = running
    with sender(local) as sock:
        assert echo(sock, b"unicast", remote, PORT, timeout=0.5) is None


def test_oversized_datagrams_are_counted_not_echoed(responder_host, write_config):
    host, local, remote = responder_host
    config = write_config(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\nmax_datagram: 100\n"
                          "status_interval: 1\n")
    with DaemonProcess(config, host=host) as daemon:
        daemon.wait_for("ready:")
        with sender(local) as sock:
            assert echo(sock, b"x" * 101, GROUP, PORT, timeout=0.5) is None
            assert echo(sock, b"x" * 100, GROUP, PORT) == (b"x" * 100, (remote, PORT))
        line = daemon.wait_for("above max_datagram")
        assert "datagram of 101 bytes" in line


def test_sigterm_leaves_the_group_and_exits_0(running):
    daemon, host, local, remote, _ = running
    assert ("eth0", GROUP) in host.igmp_groups()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.stop() == 0
    assert ("eth0", GROUP) not in host.igmp_groups()
    assert f"left {GROUP} on eth0" in daemon.log


def test_sigterm_during_a_flood_exits_within_a_second(running):
    daemon, host, local, remote, _ = running
    flood = host.popen(["python3", "-c", f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("{remote}"))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
end = time.monotonic() + 6
n = 0
while time.monotonic() < end and n < 3_000_000:
    try:
        s.sendto(b"f" * 64, ("{GROUP}", {PORT}))
    except OSError:
        pass
    n += 1
    if n == 10_000:
        print("flooding", flush=True)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout.readline() == "flooding\n"  # 10,000 sent: the flood is on
        start = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.stop(timeout=5) == 0, daemon.log
        took = time.monotonic() - start
        assert took < allowance(1.0, 3), took  # measured while the flood goes on
        assert ("eth0", GROUP) not in host.igmp_groups()
    finally:
        flood.kill()
        flood.wait()


def test_sighup_moves_to_a_new_group(running):
    daemon, host, local, remote, write = running
    mark = daemon.mark()
    write(f"group: 224.3.29.99\nport: {PORT}\ninterface: eth0\n")
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("reloaded:", start=mark)
    groups = host.igmp_groups()
    assert ("eth0", "224.3.29.99") in groups and ("eth0", GROUP) not in groups
    with sender(local) as sock:
        assert echo(sock, b"new", "224.3.29.99", PORT) == (b"new", (remote, PORT))
        drain(sock)
        assert echo(sock, b"old", GROUP, PORT, timeout=0.5) is None


def test_sighup_with_a_broken_file_keeps_serving(running):
    daemon, host, local, remote, write = running
    mark = daemon.mark()
    path = write("group: 224.3.29.99\nport: 70000\n")
    daemon.send_signal(signal.SIGHUP)
    line = daemon.wait_for("reload failed", start=mark)
    assert "ERROR" in line and f"{path}:2: port: 70000 is out of range 1..65535" in line
    assert daemon.proc.poll() is None
    with sender(local) as sock:
        assert echo(sock, b"old", GROUP, PORT) == (b"old", (remote, PORT))


def test_sighup_changing_only_options_keeps_the_membership(running):
    daemon, host, local, remote, write = running
    mark = daemon.mark()
    write(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\nrecv_buffer: 1MiB\n")
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("reloaded:", start=mark)
    assert "receive buffer: requested 1 MiB" in daemon.log
    assert f"left {GROUP}" not in daemon.log  # no rejoin for an option change
    with sender(local) as sock:
        assert echo(sock, b"same", GROUP, PORT) == (b"same", (remote, PORT))


def test_interface_by_address(responder_host, write_config):
    host, local, remote = responder_host
    with DaemonProcess(write_config(f"interface: {remote}\n"), host=host) as daemon:
        daemon.wait_for(f"joined {GROUP} on eth0")
        with sender(local) as sock:
            assert echo(sock, b"by address", GROUP, PORT) == (b"by address", (remote, PORT))


def test_default_interface_is_the_route_to_the_group(responder_host, write_config):
    host, local, remote = responder_host
    daemon = DaemonProcess(write_config("{}\n"), host=host)
    try:
        daemon.wait_for(f"joined {GROUP} on eth0")
    finally:
        assert daemon.stop() == 0
    assert f"left {GROUP} on eth0" in daemon.log
