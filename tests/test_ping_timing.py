"""What `mcast-echo ping` times: the -w deadline and its loss (issue 19.1), the round trip
without either end's software (19.2), replies spread over --spread (19.3)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemonproc import DaemonProcess
from mcast_echo.net import ancillary
from mcast_echo.net.ancillary import STAMPED_ARRIVAL_SPACE, Received
from mcast_echo.wire import probe

GROUP, PORT = "224.3.29.71", 9999


@pytest.fixture(scope="module")
def responder(tmp_path_factory):
    """One daemon on another host, cabled to ours: a lossless link."""
    from netlab import Host, veth
    directory = tmp_path_factory.mktemp("timing")
    config = directory / "mcast-echo.yaml"
    config.write_text(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n")
    with Host("timing") as host:
        veth("vtiming", "10.67.0.1/24", host, "eth0", "10.67.0.2/24")
        with DaemonProcess(config, host=host) as daemon:
            daemon.wait_for("ready:")
            yield host, daemon
    subprocess.run(["ip", "link", "del", "vtiming"], capture_output=True)


def ping(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mcast_echo", "ping", GROUP, "-p", str(PORT),
                             "-I", "vtiming", "-n", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def samples(path) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found.setdefault(sample.name, sample.value)
    return found


# --- 19.1: -w ends on time and counts no probe lost whose answer could not come -----------------

@pytest.mark.parametrize("deadline, interval, probes", [("1", "0.2", 5), ("2", "0.5", 4),
                                                         ("3", "1", 3)])
def test_a_deadline_run_on_a_lossless_link_loses_nothing(responder, tmp_path, deadline,
                                                         interval, probes):
    textfile = tmp_path / "probe.prom"
    text = ping("-w", deadline, "-i", interval)
    as_json = ping("-w", deadline, "-i", interval, "--json",
                   "--prometheus-textfile", str(textfile))
    text_out, text_err = text.communicate(timeout=30)
    json_out, json_err = as_json.communicate(timeout=30)
    assert text.returncode == 0, text_out + text_err
    assert (f"10.67.0.2 (timing, eth0) hops=0: {probes} transmitted, {probes} received, "
            "0% loss") in text_out
    assert re.search(rf"^{probes} probes transmitted, 1 responder$", text_out, re.M), text_out
    assert as_json.returncode == 0, json_out + json_err
    document = json.loads(json_out)
    assert document["transmitted"] == probes
    [only] = document["responders"]
    assert (only["received"], only["loss_percent"]) == (probes, 0.0)
    assert 0 < document["duration_s"] <= float(deadline)
    found = samples(textfile)
    assert found["mcast_echo_probe_loss_ratio"] == 0.0
    assert found["mcast_echo_probe_probes_sent"] == probes
    assert 0 < found["mcast_echo_probe_duration_seconds"] <= float(deadline)


def test_a_deadline_shorter_than_the_interval_still_sends_one_probe(responder):
    done = ping("-w", "0.5", "-i", "1", "--json")
    out, err = done.communicate(timeout=30)
    document = json.loads(out)
    assert document["transmitted"] == 1 and document["responders"][0]["received"] == 1, err
    assert document["duration_s"] <= 0.5


def test_a_count_with_a_deadline_keeps_sending_every_probe(responder):
    """-c N: the count decides what is sent, as before; -w only ends the run."""
    done = ping("-c", "3", "-i", "0.2", "-w", "5", "--json")
    out, err = done.communicate(timeout=30)
    document = json.loads(out)
    assert document["transmitted"] == 3, err
    assert document["responders"][0]["received"] == 3


# --- 19.2: the RTT is the network's: the responder's residence time comes off ---------------

# A responder of our own, on the timing host: it echoes each probe with the trailer, after
# holding it HOLD seconds, and states a residence time: the true one ("hold"), one longer
# than any round trip ("forge"), or none at all, byte for byte ("plain": the seed's server).
FAKE_RESPONDER = """
import socket, struct, sys, time
from mcast_echo.net import ancillary
from mcast_echo.wire import probe
group, port, mode, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, ancillary.SO_TIMESTAMPNS, 1)
sock.bind((group, port))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                struct.pack("4s4si", socket.inet_aton(group), bytes(4), 0))
print("ready", flush=True)
while True:
    data, ancdata, _flags, source = sock.recvmsg(65535, 64)
    received_ns = ancillary.timespec_ns(ancdata[0][2])
    if mode != "plain":
        arrival = probe.Arrival("fake", "eth0", group, None, received_ns)
        data = probe.with_trailer(data, arrival)
    time.sleep(hold)  # the stimulus: the residence time under test
    if mode == "hold":
        data, _ = probe.stamp_residence(data, received_ns)
    elif mode == "forge":
        data = data[:-8] + struct.pack("!Q", 10 * 10**9)
    sock.sendto(data, source)
"""
FAKE_PORT = 9998


@pytest.fixture
def fake_responder(responder):
    host, _daemon = responder
    started = []

    def start(mode: str, hold: float = 0.0) -> None:
        proc = host.popen([sys.executable, "-c", FAKE_RESPONDER, GROUP, str(FAKE_PORT), mode,
                           str(hold)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def fake_ping(*args: str) -> tuple[str, dict]:
    """Text, then JSON (one after the other: the fake responder answers one at a time)."""
    text = ping("-p", str(FAKE_PORT), "-c", "3", "-i", "0.1", "-W", "2", *args)
    out, err = text.communicate(timeout=30)
    as_json = ping("-p", str(FAKE_PORT), "-c", "3", "-i", "0.1", "-W", "2", "--json", *args)
    json_out, json_err = as_json.communicate(timeout=30)
    assert text.returncode == as_json.returncode == 0, out + err + json_out + json_err
    return out, json.loads(json_out)["responders"][0]


def stamped_client() -> socket.socket:
    """A probing socket on the timing link whose echoes carry the kernel's receive time."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, ancillary.SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.67.0.1"))
    sock.settimeout(5)
    return sock


def reply_times(out: str) -> list[float]:
    return [float(ms) for ms in re.findall(r"seq=\d+ time=([0-9.]+) ms", out)]


def test_the_daemon_states_its_residence_time_and_it_is_less_than_the_round_trip(responder):
    """Each path's echo carries T3 - T2: never negative, less than T4 - T1."""
    with stamped_client() as sock:
        for seq in range(5):
            sent_ns = time.time_ns()
            sock.sendto(probe.build_probe(7, seq, sent_ns, 192), (GROUP, PORT))
            data, ancdata, _flags, _source = sock.recvmsg(65535, STAMPED_ARRIVAL_SPACE)
            round_trip_ns = Received(ancdata).received_ns - sent_ns
            echo = probe.check_echo(data, 7)
            assert echo is not None and echo.intact and len(data) == 192
            assert echo.trailer.hostname == "timing"
            residence_ns = echo.trailer.residence_ns
            assert residence_ns is not None
            assert 0 <= residence_ns < round_trip_ns, (residence_ns, round_trip_ns)


def test_a_true_residence_time_comes_off_the_rtt(fake_responder):
    """A responder that holds each probe 300 ms and says so: ping shows the network's RTT,
    far below the hold, in the lines, the summary and the JSON (p50 too)."""
    fake_responder("hold", 0.3)
    out, stats = fake_ping()
    times = reply_times(out)
    assert len(times) == 3 and max(times) < 100, out
    assert stats["received"] == 3 and stats["impossible_residence"] == 0
    rtt = stats["rtt_ms"]
    assert set(rtt) == {"min", "avg", "max", "mdev", "p50"}
    assert 0 <= rtt["min"] <= rtt["p50"] <= rtt["max"] < 100, rtt


def test_a_residence_time_longer_than_the_round_trip_is_shown_impossible(fake_responder):
    fake_responder("forge")
    out, stats = fake_ping()
    lines = [line for line in out.splitlines() if "seq=" in line]
    assert len(lines) == 3, out
    for line in lines:
        assert "(IMPOSSIBLE residence time 10000.000 ms: RTT not corrected)" in line, line
    assert all(0 <= ms < 1000 for ms in reply_times(out)), out  # the raw round trip
    assert (stats["received"], stats["impossible_residence"]) == (3, 3)
    assert 0 <= stats["rtt_ms"]["min"]


def test_a_byte_for_byte_echo_gets_the_raw_round_trip(fake_responder):
    """No trailer, no residence time: intact, counted, and the RTT is T4 - T1 (the
    server's 50 ms hold included)."""
    fake_responder("plain", 0.05)
    out, stats = fake_ping()
    assert all(50 <= ms < 1000 for ms in reply_times(out)) and len(reply_times(out)) == 3, out
    assert (stats["received"], stats["corrupted"], stats["truncated"]) == (3, 0, 0)
    assert stats["rtt_ms"]["min"] >= 50


# --- 19.3: --spread: each responder delays each reply by 0..MS ms, and RTTs stay true -------

def test_replies_are_spread_and_their_rtt_stays_true(responder):
    """Probes asking for a 200 ms spread: the raw round trips spread over tens of ms, the
    residence time holds the delay, and the RTT less it is the network's."""
    raw, true = [], []
    with stamped_client() as sock:
        for seq in range(10):
            sent_ns = time.time_ns()
            sock.sendto(probe.build_probe(9, seq, sent_ns, 192, spread_ms=200), (GROUP, PORT))
            data, ancdata, _flags, _source = sock.recvmsg(65535, STAMPED_ARRIVAL_SPACE)
            echo = probe.check_echo(data, 9)
            assert echo is not None and echo.intact and echo.header.spread_ms == 200
            round_trip_ns = Received(ancdata).received_ns - sent_ns
            residence_ns = echo.trailer.residence_ns
            assert 0 <= residence_ns < round_trip_ns
            assert residence_ns < 300e6  # the delay is at most 200 ms (cap 255)
            raw.append(round_trip_ns)
            true.append(round_trip_ns - residence_ns)
    assert max(raw) - min(raw) > 20e6, raw  # spread: uniform over 0..200 ms
    assert max(true) < 20e6, true  # the network's round trip on a veth


def test_ping_spread_waits_for_the_last_replies_and_shows_true_rtts(responder):
    """-W 0.01 alone would lose the last echoes, delayed up to 200 ms: the wait covers the
    spread. Every reply counts, and no RTT carries the delay."""
    done = ping("-c", "10", "-i", "0.02", "-W", "0.01", "--spread", "200", "--json")
    out, err = done.communicate(timeout=30)
    document = json.loads(out)
    assert document["settings"]["spread"] == 200
    [only] = document["responders"]
    assert (only["received"], only["loss_percent"]) == (10, 0.0), err
    assert only["rtt_ms"]["max"] < 20, only["rtt_ms"]


def test_a_spread_is_refused_for_other_dialects():
    done = subprocess.run([sys.executable, "-m", "mcast_echo", "ping", "--protocol", "ssmping",
                           "--spread", "10", "10.67.0.2"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 64 and "drop --spread" in done.stderr, done.stderr


def test_held_replies_leave_by_due_time_and_the_heap_is_bounded():
    from types import SimpleNamespace

    from mcast_echo.daemon.delayed import DelayedReplies
    from mcast_echo.daemon.residence import ResidenceHistogram

    held = DelayedReplies(max_held=2)
    sink = SimpleNamespace(echoed=0, echoed_bytes=0, residence=ResidenceHistogram(),
                           drop=lambda *args: None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as into:
        into.bind(("127.0.0.1", 0))
        into.settimeout(2)
        to = ((into.getsockname(), None),)
        assert held.hold(255, out, sink, b"first", to, None)
        assert held.hold(255, out, sink, b"second", to, None)
        assert not held.hold(255, out, sink, b"third", to, None)  # over the cap: send now
        assert (len(held.waiting), held.overflowed, held.held_bytes) == (2, 1, 11)
        assert time.monotonic() <= held.next_due <= time.monotonic() + 0.256
        held.send_due(time.monotonic())  # the delays are fresh: maybe one is due, maybe none
        held.send_due(time.monotonic() + 1)
        assert len(held.waiting) == 0 and held.held_bytes == 0 and held.next_due == float("inf")
        assert sorted(into.recv(100) for _ in range(2)) == [b"first", b"second"]
        assert (sink.echoed, sink.echoed_bytes, held.delayed) == (2, 11, 2)
    assert all(0 <= held.delay(1000) <= 0.255 for _ in range(100))  # capped at 255 ms


def test_spread_echoes_to_the_group_too(responder, tmp_path):
    """reply: both (the plain path): the held echo goes both ways, delayed once, and the
    RTTs of both stay the network's."""
    host, _daemon = responder
    config = tmp_path / "both.yaml"
    config.write_text(f"group: {GROUP}\nport: 9997\ninterface: eth0\nreply: both\n")
    with DaemonProcess(config, host=host) as daemon:
        daemon.wait_for("ready:")
        done = ping("-p", "9997", "-c", "5", "-i", "0.05", "-W", "0.01", "--spread", "100",
                    "--json")
        out, err = done.communicate(timeout=30)
    [only] = json.loads(out)["responders"]
    assert (only["via"], only["received"], only["copies"]) == ("both", 5, 5), err
    assert only["rtt_ms"]["max"] < 20, only["rtt_ms"]


def test_held_echoes_keep_the_rate_limit_and_the_probe_s_size(responder, tmp_path):
    """20 probes asking for a spread, from one source whose rate limit admits a burst of 3:
    3 echoes come back, each exactly its probe's size; the rest are dropped, never held."""
    host, _daemon = responder
    config = tmp_path / "limited.yaml"
    config.write_text(f"group: {GROUP}\nport: 9996\ninterface: eth0\n"
                      "rate_limit: {rate: 1, burst: 3}\n")
    with DaemonProcess(config, host=host) as daemon, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        daemon.wait_for("ready:")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.67.0.1"))
        sizes = [192 + n for n in range(20)]
        for seq, size in enumerate(sizes):
            sock.sendto(probe.build_probe(11, seq, time.time_ns(), size, spread_ms=100),
                        (GROUP, 9996))
        sock.settimeout(1.0)
        echoes = []
        try:
            while True:
                echoes.append(sock.recv(65535))
        except socket.timeout:
            pass
    assert len(echoes) == 3, len(echoes)
    for data in echoes:
        echo = probe.check_echo(data, 11)
        assert echo is not None and echo.intact and len(data) == sizes[echo.header.seq]
