"""The two echo paths (daemon/echopath.py) and the batched I/O under the fast one (net/mmsg.py).

`make test` runs the echo tests twice, on the fast and on the plain path; these check that
the choice is the one asked for, and the recvmmsg/sendmmsg buffers on their own.
"""

from __future__ import annotations

import itertools
import select
import socket
import struct
import time
from typing import Optional

import pytest

from clients import sender
from daemonproc import DaemonProcess
from mcast_echo.daemon import echopath, receivetimes
from mcast_echo.net import ancillary, mcast, mmsg
from waiting import wait_until

GROUP = "224.3.29.71"


@pytest.mark.parametrize("wanted, shown", [("fast", "fast (recvmmsg/sendmmsg"),
                                           ("plain", "plain (recvmsg/sendto)"),
                                           ("bogus", "fast (recvmmsg/sendmmsg")])
def test_the_daemon_says_which_echo_path_it_runs(write_config, wanted, shown):
    with DaemonProcess(write_config("interface: lo\n"),
                       env={echopath.ENV: wanted}) as daemon:
        assert shown in daemon.wait_for("echo path:")
        if wanted == "bogus":
            assert "is not one of auto, fast, plain; using auto" in daemon.log
        daemon.wait_for("ready:")
        with sender("127.0.0.1", timeout=2) as sock:
            sock.sendto(b"data", (GROUP, 9999))
            assert sock.recvfrom(100) == (b"data", ("127.0.0.1", 9999))


@pytest.mark.parametrize("wanted, path", [("plain", echopath.PlainPath),
                                          ("fast", echopath.BatchPath)])
def test_choose_honours_the_preference(monkeypatch, wanted, path):
    monkeypatch.setenv(echopath.ENV, wanted)
    assert isinstance(echopath.Paths().fast, path)


def group_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, mcast.IP_MULTICAST_ALL, 0)
    sock.setsockopt(socket.IPPROTO_IP, ancillary.IP_PKTINFO, 1)
    sock.setsockopt(socket.IPPROTO_IP, ancillary.IP_RECVTTL, 1)
    mcast.enable_receive_stamps(sock)
    mcast.stamp_each_datagram(sock, True)
    sock.bind((GROUP, 9998))
    mreq = struct.pack("=4s4si", socket.inet_aton(GROUP), socket.inet_aton("0.0.0.0"),
                       socket.if_nametoindex("lo"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.setblocking(False)
    return sock


def test_a_batch_receives_lengths_peers_and_ancillary_data_and_echoes_them():
    batch = mmsg.Batch(8)
    with group_socket() as server, sender("127.0.0.1", ttl=7, timeout=2) as client:
        assert batch.receive(server.fileno()) == 0  # nothing queued: 0, not an exception
        payloads = [b"", b"x", bytes(range(256)) * 5, b"last"]
        for payload in payloads:
            client.sendto(payload, (GROUP, 9998))
        count = batch.receive(server.fileno())
        assert count == len(payloads)
        assert list(batch.lengths[:count]) == [len(p) for p in payloads]
        port = client.getsockname()[1]
        times = []
        for i, payload in enumerate(payloads):
            assert batch.payload(i, len(payload)) == payload
            assert batch.peer(i) == ("127.0.0.1", port)
            ifindex, ttl, received_ns = batch.ancillary(i)
            assert (ifindex, ttl) == (socket.if_nametoindex("lo"), 7)
            times.append(received_ns)
        # each datagram's own kernel receive time
        assert None not in times and times == sorted(times) and times[-1] <= time.time_ns()
        assert set(batch.first_octets[:count]) == {127}
        batch.send_lengths[:count] = batch.lengths[:count]
        assert batch.send(server.fileno(), 0, count) == (count, 0)
        assert [client.recv(2000) for _ in payloads] == payloads
        # the next receive starts from clean headers: a smaller batch reads right too
        client.sendto(b"again", (GROUP, 9998))
        assert batch.receive(server.fileno()) == 1
        assert batch.payload(0, batch.lengths[0]) == b"again"


def test_the_port_views_find_every_datagram_from_port_0():
    """The fast path's whole-batch check (0 not in port_high_bytes[:n]) passes no batch with
    a port 0 in it, and the walk's (family_ports[i] == NO_PORT_WORD) finds exactly those."""
    batch = mmsg.Batch(3)
    tricky = [0, 1, 2, 0x00FF, 0x0100, 0x0200, 0xFF00, 0x8000, 9999, 65535]
    for ports in itertools.product(tricky, repeat=3):
        for i, port in enumerate(ports):
            struct.pack_into("=H", batch.names, i * mmsg.NAME_SIZE, socket.AF_INET)
            struct.pack_into("!H", batch.names, i * mmsg.NAME_SIZE + 2, port)
        for n in (1, 2, 3):
            assert (0 not in batch.port_high_bytes[:n]) == all(p >= 256 for p in ports[:n])
        assert [batch.family_ports[i] == mmsg.NO_PORT_WORD for i in range(3)] == \
            [port == 0 for port in ports]


def test_cmsg_walk_stops_at_a_bad_length():
    buffer = bytearray(64)
    struct.pack_into("@Nii", buffer, 0, 3, socket.IPPROTO_IP, ancillary.IP_PKTINFO)  # too short
    assert ancillary.parse_ip_cmsgs(buffer, 0, 64) == (None, None, None)
    struct.pack_into("@Nii", buffer, 0, 1000, socket.IPPROTO_IP, ancillary.IP_PKTINFO)  # too long
    assert ancillary.parse_ip_cmsgs(buffer, 0, 64) == (None, None, None)


def test_the_counters_are_logged_in_the_foreground_and_at_stop(write_config):
    """Issue 13.12: totals on stop (received, echoed, dropped by reason), and the STATUS
    line every status_interval at debug level."""
    config = write_config("interface: lo\nstatus_interval: 1\nmax_datagram: 10\n")
    with DaemonProcess(config, args=("--log-level", "debug")) as daemon:
        daemon.wait_for("ready:")
        with sender("127.0.0.1", timeout=1) as sock:
            sock.sendto(b"data", (GROUP, 9999))
            assert sock.recv(100) == b"data"
            sock.sendto(b"far too long", (GROUP, 9999))
        daemon.wait_for("status: 224.3.29.71:9999 on lo: received 2, echoed 1, dropped 1 "
                        "(size 1)", timeout=3)
        assert daemon.stop() == 0
        assert ("totals: 224.3.29.71:9999 on lo: received 2, echoed 1, dropped 1 (size 1)"
                in daemon.log)


def test_the_route_hint_works_on_lo(write_config):
    """Issue 13.10: with `ip route add 224.0.0.0/4 dev lo` the route has no source address;
    the hint must be one that works there, and following it lets the daemon join."""
    from netlab import Host, ip

    with Host("lohint") as host:
        ip("route", "add", "224.0.0.0/4", "dev", "lo", host=host)
        with DaemonProcess(write_config("group: 239.9.9.9\n"), host=host) as daemon:
            line = daemon.wait_for("waiting for a route to the group")
            assert "ip route replace 224.0.0.0/4 dev lo src 127.0.0.1" in line, line
            ip("route", "replace", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1", host=host)
            daemon.wait_for("joined 239.9.9.9 on lo after waiting", timeout=5)


def test_the_receive_stamp_is_the_last_datagrams_kernel_time():
    """mcast.last_receive_ns (a lone probe's T2 on the fast path): None before anything
    was read, then the kernel's receive time of the datagram read last."""
    with _bare_group_socket() as server, sender("127.0.0.1", ttl=1, timeout=2) as client:
        assert mcast.last_receive_ns(server.fileno()) is None
        client.sendto(b"first", (GROUP, 9998))
        wait_until(lambda: _readable(server), 2)
        sent_first_by = time.time_ns()
        assert server.recv(100) == b"first"
        first = mcast.last_receive_ns(server.fileno())
        assert first is not None and first <= sent_first_by
        client.sendto(b"second", (GROUP, 9998))
        wait_until(lambda: _readable(server), 2)
        assert server.recv(100) == b"second"
        second = mcast.last_receive_ns(server.fileno())
        assert second is not None and first < second <= time.time_ns()


def test_datagrams_carry_their_own_time_while_probes_come():
    """receivetimes.py: off until a probe comes (no control message per datagram), on
    from then for STAMP_HOLD, off again after it; a socket closed meanwhile is let go."""
    times = receivetimes.ReceiveTimes()
    with _bare_group_socket() as server, sender("127.0.0.1", ttl=1, timeout=2) as client:
        assert _own_time(server, client) is None
        times.keep(server, now=100.0)
        assert times.due == 100.0 + receivetimes.STAMP_HOLD
        assert _own_time(server, client) is not None
        assert times.of_batch(server) is None  # the kernel keeps no batch time meanwhile
        times.keep(server, now=110.0)  # a later probe moves the end
        times.expire(100.0 + receivetimes.STAMP_HOLD)
        assert _own_time(server, client) is not None and server in times.until
        times.expire(110.0 + receivetimes.STAMP_HOLD)
        assert _own_time(server, client) is None and times.due == float("inf")
        assert times.of_batch(server) is not None  # the batch's time is back
        times.keep(server, now=200.0)
    times.expire(200.0 + receivetimes.STAMP_HOLD)  # closed: no error, forgotten
    assert not times.until


def _bare_group_socket() -> socket.socket:
    """group_socket() without per-datagram times, as the fast path's sockets start."""
    sock = group_socket()
    mcast.stamp_each_datagram(sock, False)
    return sock


def _own_time(server: socket.socket, client: socket.socket) -> Optional[int]:
    """Send one datagram to *server* and read it: its SO_TIMESTAMPNS time, None if none."""
    client.sendto(b"t", (GROUP, 9998))
    wait_until(lambda: _readable(server), 2)
    _, ancdata, _, _ = server.recvmsg(16, 256)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == ancillary.SO_TIMESTAMPNS:
            return ancillary.timespec_ns(data)
    return None


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])
