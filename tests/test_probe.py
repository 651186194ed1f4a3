"""The probe header and identity trailer (probe.py), and ping's per-responder stats: no network."""

from __future__ import annotations

import random
import struct
import zlib
from time import time_ns

import pytest

from mcast_echo.ping import replyline, responderstats, rttstats
from mcast_echo.wire import probe
from mcast_echo.wire.probe import HEADER_SIZE, MAX_UDP_PAYLOAD, Arrival

SESSION = 0x1234ABCD
ARRIVAL = Arrival("host-b", "eth1", "224.3.29.71", 63, 1_700_000_000_123_456_789)


def a_probe(size: int = 64, seq: int = 7, flags: int = probe.FLAG_WANT_TRAILER) -> bytes:
    return probe.build_probe(SESSION, seq, 1_700_000_000_000_000_000, size, sent_ttl=64,
                             flags=flags)


@pytest.mark.parametrize("size", [HEADER_SIZE, HEADER_SIZE + 1, 64, 1400, MAX_UDP_PAYLOAD])
def test_probe_has_the_asked_size_and_round_trips(size):
    data = a_probe(size)
    assert len(data) == size
    assert probe.parse_header(data) == probe.Header(
        probe.FLAG_WANT_TRAILER, 64, SESSION, 7, 1_700_000_000_000_000_000, size)


def test_header_layout_is_the_documented_one():
    data = a_probe(40, seq=5)
    assert data[:4] == b"MCEP" and data[4] == 1 and data[5] == 2 and data[6] == 64
    assert struct.unpack_from("!II", data, 8) == (SESSION, 5)
    assert struct.unpack_from("!I", data, 24) == (40,)
    assert struct.unpack_from("!I", data, 28) == (zlib.crc32(data[:28]),)
    assert list(data[32:]) == [(i + 5) % 256 for i in range(32, 40)]


@pytest.mark.parametrize("size", [1, HEADER_SIZE - 1, MAX_UDP_PAYLOAD + 1])
def test_probe_sizes_out_of_range_are_refused(size):
    with pytest.raises(ValueError, match="out of range"):
        a_probe(size)


@pytest.mark.parametrize("data", [
    b"", b"MCEP", b"hello, world", b"\x00" * 100,
    a_probe()[:HEADER_SIZE - 1],  # too short
    b"XCEP" + a_probe()[4:],  # magic
    a_probe()[:4] + b"\x02" + a_probe()[5:],  # a version this responder does not know
    a_probe(flags=0),  # did not ask
    a_probe(flags=probe.FLAG_LEGACY_TRAILER),  # asked for the old, appended (larger) trailer
    a_probe(probe.MIN_TRAILER_PROBE - 1),  # no room for even an empty trailer
], ids=["empty", "magic-only", "text", "zeros", "short", "magic", "version", "no-flag",
        "legacy-flag", "no-room"])
def test_wants_trailer_is_false_for_anything_but_an_asking_probe(data):
    assert probe.wants_trailer(data) is False
    assert probe.wants_trailer(a_probe()) is True


def test_trailer_fills_the_room_the_probe_reserves():
    sent = a_probe(100)
    echo = probe.with_trailer(sent, ARRIVAL)
    assert len(echo) == len(sent)  # never larger than what it answers
    size = len(probe.encode_trailer(ARRIVAL))
    assert echo[: 100 - size] == sent[: 100 - size]
    assert echo[100 - size : 100 - size + 4] == b"MCET"
    trailer = probe.parse_trailer(echo[100 - size :])
    assert trailer == probe.Trailer("host-b", "eth1", "224.3.29.71", 63, ARRIVAL.recv_time_ns,
                                    0)  # the residence time's room, not stamped yet
    checked = probe.check_echo(echo, SESSION)
    assert checked is not None and checked.intact and checked.trailer == trailer


@pytest.mark.parametrize("size", [probe.MIN_TRAILER_PROBE, 53, 64, 100, 1400, MAX_UDP_PAYLOAD])
@pytest.mark.parametrize("hostname", ["h", "x" * 64, "y" * 255, "é" * 200])
def test_an_echo_is_never_larger_than_its_probe(size, hostname):
    arrival = Arrival(hostname, "eth1", "224.3.29.71", 63, 1)
    echo = probe.with_trailer(a_probe(size), arrival)
    assert len(echo) == size
    checked = probe.check_echo(echo, SESSION)
    assert checked.intact and checked.trailer is not None
    # what does not fit is cut: host name first, then the interface, then the group
    assert arrival.hostname.startswith(checked.trailer.hostname)
    if size >= 100:
        assert (checked.trailer.ifname, checked.trailer.group) == ("eth1", "224.3.29.71")


def test_names_are_cut_on_a_character_boundary():
    arrival = Arrival("é" * 40, "eth1", "224.3.29.71", 63, 1)
    room = (probe.MIN_TRAILER_SIZE + probe.RESIDENCE_SIZE + len("224.3.29.71") + len("eth1")
            + 5)  # 2.5 characters
    trailer = probe.parse_trailer(probe.encode_trailer(arrival, room))
    assert trailer.hostname == "éé"


def test_unknown_ttl_and_odd_values_are_carried_safely():
    arrival = Arrival("h" * 300 + "é", "", "", None, 5)
    echo = probe.with_trailer(a_probe(1000), arrival)
    trailer = probe.check_echo(echo, SESSION).trailer
    assert trailer is not None
    assert trailer.arrival_ttl is None and trailer.ifname == "" and len(trailer.hostname) == 255


@pytest.mark.parametrize("mangle", [
    lambda p: p[:-1],  # truncated: the length field no longer matches
    lambda p: p + b"x",  # longer than it says
    lambda p: p[:12] + bytes([p[12] ^ 1]) + p[13:],  # a header bit flipped: CRC fails
], ids=["short", "long", "crc"])
def test_malformed_probes_are_echoed_verbatim(mangle):
    data = mangle(a_probe(200))
    assert probe.with_trailer(data, ARRIVAL) == data


def test_the_largest_probe_takes_a_trailer_too():
    echo = probe.with_trailer(a_probe(MAX_UDP_PAYLOAD), ARRIVAL)
    assert len(echo) == MAX_UDP_PAYLOAD and probe.check_echo(echo, SESSION).trailer is not None
    assert len(probe.encode_trailer(ARRIVAL)) <= probe.MAX_TRAILER_SIZE


def test_with_trailer_never_raises_on_random_or_mangled_input():
    rng = random.Random(3)
    good = a_probe(96)
    arrivals = [ARRIVAL, Arrival("", "", "", None, 0), Arrival("x", "y", "z", 999, -1),
                Arrival(None, None, None, -5, 2**70)]  # type: ignore[arg-type]
    for i in range(3000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
            data = b"MCEP\x01\x02" + data if i % 4 == 1 else data
        else:
            mutable = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                mutable[rng.randrange(len(mutable))] = rng.getrandbits(8)
            data = bytes(mutable[: rng.randrange(len(mutable) + 1)])
        for arrival in arrivals:
            out = probe.with_trailer(data, arrival)
            assert len(out) == len(data)
            if out != data:
                assert probe.parse_header(data) is not None
                assert out[:HEADER_SIZE] == data[:HEADER_SIZE]


def test_a_later_trailer_version_with_more_fields_still_parses():
    """New fields go after the group; the residence time stays the last 8 bytes."""
    known = probe.encode_trailer(ARRIVAL)
    trailer = bytearray(known[:-8] + b"\x07extra" + struct.pack("!Q", 1234))
    trailer[4] = 2
    struct.pack_into("!H", trailer, 6, len(trailer))
    parsed = probe.parse_trailer(bytes(trailer))
    assert (parsed.hostname, parsed.group, parsed.residence_ns) == ("host-b", "224.3.29.71", 1234)


def test_the_residence_time_is_stamped_into_the_echo_s_last_bytes():
    """Issue 19.2: T3 - T2 in the probe's own room; the echo keeps the probe's length."""
    sent = a_probe(192)
    echo = probe.with_trailer(sent, ARRIVAL)
    stamped, stated = probe.stamp_residence(echo, time_ns() - 5_000_000)
    assert len(stamped) == len(sent) and stamped[:-8] == echo[:-8]
    residence = probe.check_echo(stamped, SESSION).trailer.residence_ns
    assert 5_000_000 <= residence == stated < 5_000_000 + 10**9
    buffer = bytearray(echo)
    assert probe.pack_residence(buffer, len(buffer), 1_000, 4_000) == 3_000
    assert probe.check_echo(bytes(buffer), SESSION).trailer.residence_ns == 3_000
    probe.pack_residence(buffer, len(buffer), 9_000, 4_000)  # a clock step back: never < 0
    assert probe.check_echo(bytes(buffer), SESSION).trailer.residence_ns == 0


def test_a_probe_with_room_for_the_names_only_has_no_residence_time():
    for size, residence in ((probe.MIN_TRAILER_PROBE, None),
                            (probe.RESIDENCE_PROBE - 1, None), (probe.RESIDENCE_PROBE, 0)):
        trailer = probe.check_echo(probe.with_trailer(a_probe(size), ARRIVAL), SESSION).trailer
        assert trailer is not None and trailer.residence_ns == residence, size


def test_a_first_release_trailer_without_a_residence_time_still_parses():
    old = bytearray(probe.encode_trailer(ARRIVAL)[:-8])
    old[5] &= ~probe.TRAILER_RESIDENCE
    struct.pack_into("!H", old, 6, len(old))
    parsed = probe.parse_trailer(bytes(old))
    assert (parsed.hostname, parsed.residence_ns) == ("host-b", None)


def test_the_rtt_is_the_round_trip_less_the_residence_time_never_negative():
    from mcast_echo.ping.dialect_mcast import network_rtt

    def echo(residence):
        trailer = probe.Trailer("h", "", "", None, 0, residence)
        return probe.Echo(probe.Header(0, 0, 0, 0, 0, 64), trailer, False, False)

    assert network_rtt(900_000, echo(600_000)) == (300_000, None)
    assert network_rtt(900_000, echo(None)) == (900_000, None)  # a plain echo: raw
    assert network_rtt(900_000, echo(900_001)) == (900_000, 900_001)  # impossible: raw
    stats = rttstats.RttStats()
    for rtt in (5, 1, 3, 2, 4):
        stats.add(rtt * 1_000_000)
    assert stats.as_ms()["p50"] == 3.0


def test_check_echo_flags_truncation_corruption_and_strangers():
    data = a_probe(300)
    assert probe.check_echo(data, SESSION).intact
    assert probe.check_echo(data, SESSION + 1) is None  # another run's probe
    assert probe.check_echo(b"plain text", SESSION) is None
    cut = probe.check_echo(data[:200], SESSION)
    assert cut.truncated and not cut.intact
    flipped = bytearray(data)
    flipped[250] ^= 0xFF
    assert probe.check_echo(bytes(flipped), SESSION).corrupted
    assert probe.check_echo(data + b"junk", SESSION).corrupted  # longer than the probe
    appended = data + probe.encode_trailer(ARRIVAL)  # the first release's (larger) echo
    assert probe.check_echo(appended, SESSION).corrupted
    header_hit = bytearray(data)
    header_hit[10] ^= 1
    assert probe.check_echo(bytes(header_hit), SESSION) is None  # cannot be matched


def test_another_sequence_number_has_other_padding():
    assert a_probe(100, seq=1)[HEADER_SIZE:] != a_probe(100, seq=2)[HEADER_SIZE:]


# --- per-responder stats -------------------------------------------------------------------------

def echo_of(seq: int, arrival: Arrival = ARRIVAL, size: int = 128) -> probe.Echo:
    return probe.check_echo(probe.with_trailer(a_probe(size, seq=seq), arrival), SESSION)


def test_stats_count_duplicates_and_compute_rtt_like_ping():
    stats = responderstats.ResponderStats("10.0.0.2", 9999)
    assert stats.record(echo_of(0), 1_000_000, 64, 64) is responderstats.Outcome.NEW
    assert stats.record(echo_of(1), 3_000_000, 64, 64) is responderstats.Outcome.NEW
    assert stats.record(echo_of(1), 5_000_000, 64, 64) is responderstats.Outcome.DUP
    assert (stats.received, stats.duplicates) == (2, 1)
    assert stats.rtt_ms() == {"min": 1.0, "avg": 2.0, "max": 3.0, "mdev": 1.0, "p50": 2.0}
    assert stats.loss_percent(4) == 50.0
    assert stats.identity() == "10.0.0.2 (host-b, eth1) hops=1"
    assert stats.summary_line(4) == (
        "10.0.0.2 (host-b, eth1) hops=1: 4 transmitted, 2 received, +1 duplicates, 50% loss, "
        "rtt min/avg/max/mdev = 1.000/2.000/3.000/1.000 ms")


def test_damaged_echoes_do_not_count_as_received():
    stats = responderstats.ResponderStats("10.0.0.2", 9999)
    cut = probe.check_echo(a_probe(300)[:100], SESSION)
    outcome = stats.record(cut, 1000, None, 64)
    assert outcome is responderstats.Outcome.DAMAGED
    assert (stats.received, stats.truncated) == (0, 1)
    line = replyline.reply_line(stats, cut, 100, 1000, outcome)
    assert line == "100 bytes from 10.0.0.2: seq=7 (TRUNCATED: 100 of 300 bytes)"
    assert stats.rtt_ms() is None


def test_reply_line_of_a_plain_echo_server():
    echo = probe.check_echo(a_probe(1400, seq=3), SESSION)
    stats = responderstats.ResponderStats("10.0.0.2", 9999)
    outcome = stats.record(echo, 412_000, 64, 64)
    assert replyline.reply_line(stats, echo, 1400, 412_000, outcome) == (
        "1400 bytes from 10.0.0.2: seq=3 time=0.412 ms")
