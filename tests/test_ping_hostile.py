"""A hostile group member against `mcast-echo ping` (issue 12, items 3, 7 and 10).

A fake responder on a namespaced host hears ping's probes like any member and answers
with what a hostile peer can send: control characters in its names, forged TTLs and send
times, and echoes from thousands of forged source addresses or ports (a raw socket).
Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import errno
import json
import math
import random
import re
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import pytest

from mcast_echo.net import errnoadvice
from mcast_echo.ping import display, responderstats, rttstats, tally
from mcast_echo.wire import seqwindow
from netlab import ScriptOnLan

GROUP, PORT = "224.3.29.71", 9999
TARGET = f"{GROUP}:{PORT}"
FAKE_OCTET = 9
FAKE_ADDRESS = f"10.77.0.{FAKE_OCTET}"

# Answers every probe from each of its sources with a raw socket (any source address and
# port). It builds the echo with the real probe.py, so it follows the wire format as it
# changes; only the values it puts in are forged.
FAKE_RESPONDER = textwrap.dedent("""
    import json, select, socket, struct, sys, time
    from mcast_echo.wire import probe

    plan = json.loads(sys.argv[1])
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.bind(("", plan["port"]))
    listen.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                      socket.inet_aton(plan["group"]) + socket.inet_aton("0.0.0.0"))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    first = struct.unpack("!I", socket.inet_aton(plan["first_address"]))[0]
    sources = [(struct.pack("!I", first + n), port)
               for n in range(plan["addresses"]) for port in plan["ports"]]
    arrival = probe.Arrival(plan["name"], plan["ifname"], plan["group_text"],
                            plan["arrival_ttl"], 0)
    print("ready", flush=True)
    deadline, answered, sent = time.monotonic() + plan["seconds"], 0, 0
    while time.monotonic() < deadline and answered < plan["probes"]:
        if not select.select([listen], [], [], 0.2)[0]:
            continue
        data, (client, client_port) = listen.recvfrom(65535)
        header = probe.parse_header(data)
        if header is None:
            continue
        if plan["send_time"] is not None:  # the same probe, with a forged send time
            data = probe.build_probe(header.session, header.seq, plan["send_time"],
                                     header.length, header.sent_ttl, header.flags)
        echo = probe.with_trailer(data, arrival._replace(recv_time_ns=time.time_ns()))
        answered += 1
        for address, port in sources:
            # IPv4 header (the kernel fills in length and checksum), UDP without checksum
            packet = (struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 17, 0, address,
                                  socket.inet_aton(client))
                      + struct.pack("!HHHH", port, client_port, 8 + len(echo), 0) + echo)
            raw.sendto(packet, (client, 0))
            sent += 1
            if sent % 64 == 0:
                time.sleep(0.002)  # the pace (~25,000/s: what ping reads, so the kernel drops none)
    print(f"sent {sent}", flush=True)
""")


def fake_plan(**changes) -> dict:
    plan = {"group": GROUP, "port": PORT, "first_address": FAKE_ADDRESS, "addresses": 1,
            "ports": [PORT], "name": "fake", "ifname": "eth0", "group_text": GROUP,
            "arrival_ttl": 1, "send_time": None, "probes": 10, "seconds": 30}
    plan.update(changes)
    return plan


class FakeResponder(ScriptOnLan):
    """A host "fake" at 10.77.0.9 on a bridge with the test's namespace (10.77.0.1)."""

    def __init__(self, **plan) -> None:
        super().__init__("fake", FAKE_OCTET, FAKE_RESPONDER, json.dumps(fake_plan(**plan)))


pytestmark = pytest.mark.usefixtures("client_config")


def ping(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ping; its output decoded as is (text mode would turn a \\r into a line break)."""
    done = subprocess.run([sys.executable, "-m", "mcast_echo", "ping", TARGET, *args],
                          capture_output=True, timeout=timeout)
    done.stdout, done.stderr = _decode(done.stdout), _decode(done.stderr)
    return done


def _decode(output: bytes) -> str:
    return output.decode("utf-8", "backslashreplace")


def ping_watching_memory(*args: str, timeout: float = 60) -> tuple[int, str, int]:
    """(status, stdout, peak RSS in KiB) of one ping run; the peak is read while it runs."""
    proc = subprocess.Popen([sys.executable, "-m", "mcast_echo", "ping", TARGET, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak_kib, deadline = 0, time.monotonic() + timeout
    reader = _Reader(proc)
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
            try:
                proc.wait(0.05)  # a sample every 50 ms until ping exits
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode, reader.text(), peak_kib


class _Reader:
    """Drains a child's stdout on a thread, so a large document cannot block it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=lambda: self._chunks.append(proc.stdout.read()),
                                        daemon=True)
        self._thread.start()

    def text(self) -> str:
        self._thread.join(10)
        return _decode(b"".join(self._chunks))


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


# --- 3. terminal injection -------------------------------------------------------------------

HOSTILE_NAME = ("\x1b[2J\x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07\r"
                "64 bytes from 6.6.6.6 (evil) hops=0: seq=0 time=0.1 ms\n\x00\u009b31m\x7f")
HOSTILE_IFNAME = "eth0\x1b[31m\u202e"
HOSTILE_GROUP = "\n224.6.6.6\x1b[0m"


def only_printable(text: str) -> bool:
    """True when *text* holds nothing a terminal acts on but the line breaks ping writes."""
    return all(char == "\n" or char.isprintable() for char in text)


def test_a_peer_cannot_write_control_characters_to_the_terminal():
    with FakeResponder(name=HOSTILE_NAME, ifname=HOSTILE_IFNAME, group_text=HOSTILE_GROUP):
        done = ping("-c", "2", "-i", "0.05", "-W", "0.5", "-s", "1000")
        json_done = ping("--json", "-c", "1", "-W", "0.5", "-s", "1000")
    assert done.returncode == 0, done.stderr
    assert only_printable(done.stdout), repr(done.stdout)
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    assert not re.search(r"^64 bytes from 6\.6\.6\.6", done.stdout, re.M)
    lines = done.stdout.splitlines()
    replies = [line for line in lines if line.startswith("1000 bytes from")]
    assert len(replies) == 2  # one line per echo: the \n in the name made none of its own
    assert r"\x1b[2J\x1b]52;c;cHduZWQ=\x07" in replies[0]
    assert r"\r64 bytes from 6.6.6.6" in replies[0] and r"\n\x00\x9b31m\x7f" in replies[0]
    assert r"eth0\x1b[31m\u202e" in replies[0]
    # --json keeps the peer's text as sent: escaped by JSON, exact once parsed
    status, document = json_done.returncode, json.loads(json_done.stdout)
    assert status == 0, json_done.stderr
    (responder,) = document["responders"]
    assert (responder["name"], responder["interface"], responder["group"]) == (
        HOSTILE_NAME, HOSTILE_IFNAME, HOSTILE_GROUP)
    assert only_printable(json_done.stdout)


@pytest.mark.parametrize("text, shown", [
    ("host-a", "host-a"),
    ("héllo wörld ☃", "héllo wörld ☃"),
    ("\x1b[2J", r"\x1b[2J"),
    ("a\r\nb\x00\t", r"a\r\nb\x00\t"),
    ("\x7f\u0085\u009b", r"\x7f\x85\x9b"),
    ("\u202eevil\u200b", r"\u202eevil\u200b"),
    ("back\\slash", r"back\\slash"),  # so a peer cannot pass its text off as our escape
    ("\U000e0041", r"\U000e0041"),
])
def test_shown_escapes_what_a_terminal_acts_on(text, shown):
    assert display.shown(text) == shown
    assert display.shown(text).isprintable()


# --- 7. memory bound and source ports ----------------------------------------------------------

def test_thousands_of_forged_responders_fill_a_bounded_table():
    sources = 3 * tally.MAX_RESPONDERS
    with FakeResponder(first_address="100.64.0.0", addresses=sources, probes=2) as fake:
        status, out, peak_kib = ping_watching_memory("--json", "-c", "2", "-i", "0.5",
                                                     "-W", "3", "--expect", "1")
        fake.proc.kill()
    document = json.loads(out)
    print(f"{sources} forged responders x 2 probes: peak RSS {peak_kib} KiB, "
          f"JSON {len(out)} bytes, {document['untracked_echoes']} untracked echoes")
    assert status == 0
    assert len(document["responders"]) == tally.MAX_RESPONDERS
    assert document["responder_limit"] == tally.MAX_RESPONDERS
    assert document["untracked_echoes"] > 0
    assert document["responder_count"] == tally.MAX_RESPONDERS
    assert peak_kib < 96 * 1024, peak_kib


def test_the_text_summary_says_what_was_not_tracked():
    sources = tally.MAX_RESPONDERS + 500
    with FakeResponder(first_address="100.64.0.0", addresses=sources, probes=1):
        done = ping("-q", "-c", "1", "-W", "2")
    assert done.returncode == 0, done.stderr
    tail = done.stdout.rstrip().splitlines()[-1]
    assert re.search(rf"{tally.MAX_RESPONDERS} responders, \d+ echoes from sources "
                     rf"past the first {tally.MAX_RESPONDERS} not tracked", tail), tail
    assert f"more than {tally.MAX_RESPONDERS} responders" in done.stderr


def test_source_ports_of_one_host_do_not_count_as_responders():
    ports = [PORT, 40001, 40002, 40003]
    with FakeResponder(ports=ports, probes=4):
        done = ping("-c", "2", "-i", "0.05", "-W", "0.5", "-s", "200", "--expect", "2")
        json_done = ping("--json", "-c", "2", "-i", "0.05", "-W", "0.5", "--expect", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"200 bytes from {FAKE_ADDRESS} (fake, eth0) hops=0: seq=1 time=" in done.stdout
    assert (f"200 bytes from {FAKE_ADDRESS}:40002 (fake, eth0) hops=0: seq=1 time="
            in done.stdout)
    assert re.search(r":40002 .*\(wrong source port\)$", done.stdout, re.M)
    tail = done.stdout.rstrip().splitlines()[-1]
    assert tail == ("2 probes transmitted, 1 responder (expected at least 2), "
                    f"3 from a source port other than {PORT} (not counted)")
    document = json.loads(json_done.stdout)
    assert json_done.returncode == 1
    assert (document["responder_count"], document["wrong_source_port_responders"]) == (1, 3)
    wrong = {r["port"]: r["wrong_source_port"] for r in document["responders"]}
    assert wrong == {PORT: False, 40001: True, 40002: True, 40003: True}


def test_an_echo_from_another_port_names_it_bracketed_for_ipv6():
    """The port is shown when the echo came from another one; an IPv6 address in brackets,
    so that its colons are not read as the port's."""
    assert (responderstats.ResponderStats("2001:db8::2", 40001, wrong_port=True).identity()
            == "[2001:db8::2]:40001")
    assert responderstats.ResponderStats("10.0.0.2", 40001, wrong_port=True).identity() \
        == "10.0.0.2:40001"
    assert responderstats.ResponderStats("2001:db8::2", PORT).identity() == "2001:db8::2"


def test_sequence_tracking_is_a_fixed_window():
    stats = responderstats.ResponderStats("10.0.0.2", PORT)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for seq in range(0, 4_000_000, 997):
            stats.seen.mark(seq)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 4096, after - before
    window = seqwindow.SeqWindow()
    assert [window.mark(s) for s in (5, 3, 5, 3, 4)] == [True, True, False, False, True]
    assert window.mark(5 + seqwindow.SEQ_WINDOW) is True
    assert window.mark(5) is None  # too old to tell: never a false "duplicate"
    assert window.mark(6) is True


# --- 10. forged values -------------------------------------------------------------------------

@pytest.mark.parametrize("arrival_ttl, send_time", [
    (255, 0),  # the hops=-254 and a time of the whole epoch
    (None, 2**64 - 1),  # TTL not stated; a send time in the future
    (200, 1),
])
def test_forged_ttl_and_send_time_are_not_shown_as_facts(arrival_ttl, send_time):
    with FakeResponder(arrival_ttl=arrival_ttl, send_time=send_time):
        done = ping("-c", "3", "-i", "0.05", "-W", "0.5", "-t", "1", "-s", "200")
        json_done = ping("--json", "-c", "2", "-i", "0.05", "-W", "0.5")
    assert done.returncode == 0, done.stderr
    replies = re.findall(rf"^200 bytes from {FAKE_ADDRESS} \(fake, eth0\) hops=\?: seq=\d "
                         r"time=([\d.]+) ms$", done.stdout, re.M)
    assert len(replies) == 3, done.stdout
    assert all(0 < float(ms) < 1000 for ms in replies), replies  # our clock, not the header
    assert re.search(rf"^{FAKE_ADDRESS} \(fake, eth0\) hops=\?: 3 transmitted, 3 received",
                     done.stdout, re.M)
    (responder,) = json.loads(json_done.stdout)["responders"]
    assert responder["hops"] is None and responder["arrival_ttl"] == arrival_ttl
    assert 0 < responder["rtt_ms"]["max"] < 1000


def _old_mdev(values: list[int]) -> float:
    """What ping computed before: the textbook formula, which cancels at large values."""
    mean = sum(values) / len(values)
    return math.sqrt(max(0.0, sum(v * v for v in values) / len(values) - mean * mean))


@pytest.mark.parametrize("centre_ns, jitter_ns", [
    (100_000_000, 50_000),  # ~100 ms, 50 us jitter
    (100_000_000, 3),  # ~100 ms, jitter of a few ns
    (1_800_000_000_000_000_000, 100_000_000),  # an RTT the size of a clock: 100 ms of spread
])
def test_rtt_statistics_are_stable_at_any_magnitude(centre_ns, jitter_ns):
    rng = random.Random(12)
    values = [centre_ns + rng.randint(-jitter_ns, jitter_ns) for _ in range(5000)]
    rtt = rttstats.RttStats()
    for value in values:
        rtt.add(value)
    expected = statistics.pstdev(values)
    assert rtt.mdev_ns == pytest.approx(expected, rel=1e-6, abs=1e-3)
    assert rtt.mean_ns == pytest.approx(statistics.fmean(values), rel=1e-12)
    assert (rtt.min_ns, rtt.max_ns, rtt.count) == (min(values), max(values), len(values))
    shown = rtt.as_ms()
    assert shown["mdev"] == round(expected / 1e6, 3)
    if centre_ns > 10**15:
        assert abs(_old_mdev(values) - expected) > expected / 2  # the bug this replaces


def test_one_sample_has_no_deviation():
    rtt = rttstats.RttStats()
    assert rtt.as_ms() is None
    rtt.add(123_456)
    assert rtt.as_ms() == {"min": 0.123, "avg": 0.123, "max": 0.123, "mdev": 0.0, "p50": 0.123}


def test_address_advice_names_the_option_given_and_none_when_none_was():
    """EADDRNOTAVAIL: the -S or -I the user gave is named; with neither, the kernel's words
    (it said "-I None is not an IPv4 address of this host")."""
    err = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    common = {"of_host": False, "target": "224.3.29.71", "shown": "224.3.29.71",
              "ipv6": False}
    assert errnoadvice.ping_error_text(err, interface=None, source="10.9.9.9", **common) \
        .startswith("-S 10.9.9.9 is not an IPv4 address of this host")
    assert errnoadvice.ping_error_text(err, interface="eth9", source=None, **common) \
        .startswith("-I eth9 is not an IPv4 address of this host")
    text = errnoadvice.ping_error_text(err, interface=None, source=None, **common)
    assert text == "224.3.29.71: Cannot assign requested address (EADDRNOTAVAIL)"
