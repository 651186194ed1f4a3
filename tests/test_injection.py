"""An echo never goes to a source that cannot be a real peer (issue 12, item 1).

The kernel accepts IP source 0.0.0.0 on link-local groups (224.0.0.0/24). Before this
rule, one Ethernet frame from a LAN peer (source 0.0.0.0, UDP source port 5555) made the
responder ``sendto(("0.0.0.0", 5555))``, which Linux delivers to a service on
127.0.0.1:5555 of the responder's own host, as if from 127.0.0.1.

The frame is built by hand and sent with AF_PACKET on the test's end of a veth pair,
inside the suite's private namespaces; nothing leaves the machine.
"""

from __future__ import annotations

import socket
import time

import pytest

from clients import echo, sender
from daemonproc import DaemonProcess
from loadlab import NotifySink, counters, ifname_of, udp_packet
from mcast_echo.daemon.policy import Policy, impossible_source
from mcast_echo.schema import Listener
from netlab import ip

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


@pytest.fixture
def sink(tmp_path):
    notify = NotifySink(tmp_path / "notify.sock")
    yield notify
    notify.close()


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
        time.sleep(0.3)
        counts = counters(daemon, sink)
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
    assert impossible_source(source)
    assert Policy(Listener(allow=None, rate_limit=None)).verdict(source, 0.0) == "source"
    on_lo = Policy(Listener(allow=None, rate_limit=None))
    on_lo.loopback_peers = True  # joined on lo: this host's own clients are real peers
    expected = None if source.startswith("127.") else "source"
    assert on_lo.verdict(source, 0.0) == expected


@pytest.mark.parametrize("source", ["1.0.0.0", "10.0.0.1", "126.255.255.255", "128.0.0.1",
                                    "169.254.1.1", "223.255.255.255"])
def test_real_peers_pass(source):
    assert not impossible_source(source)
    assert Policy(Listener(allow=None, rate_limit=None)).verdict(source, 0.0) is None
