"""The legacy ssmping 0.9.1 codec and responder (wire/ssmping.py): byte vectors traced from
Debian's ssmping, asmping and ssmpingd (0.9.1-4) in a private network namespace; no network."""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import replace

import pytest

from mcast_echo.wire import ssmping, tlv
from mcast_echo.wire.tlv import Malformed, Reply, Responder
from mcast_echo.wire.udp import MAX_UDP_PAYLOAD

V4_GROUP = ipaddress.IPv4Address("232.43.211.234")
V6_GROUP = ipaddress.IPv6Address("ff3e::4321:1234")
RESPONDER = Responder(groups=(V4_GROUP, V6_GROUP), server_info="mcast-echo [asm]")
SSMPINGD_VERSION = "0.9.1 (20080418) [asm][size]"


def vector(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


# `ssmping -4 -v -s 100 127.0.0.1` (pid 0x40a9, seq 1): 1 | 2 | 3 | 5 | 7 | 4, 48 bytes.
SSMPING4_V_S100 = vector(
    "51 | 0001 0004 000040a9 | 0002 0004 00000001 | 0003 0008 6b0c5c03 0007b0c0"
    " | 0005 0000 | 0007 0002 0064 | 0004 0005 01 e82bd3ea")
# ssmpingd's answer to it, from its sendmsg: 'A', the request, its version, a 16-byte pad.
SSMPINGD_REPLY = vector(
    "41 | 0001 0004 000040a9 | 0002 0004 00000001 | 0003 0008 6b0c5c03 0007b0c0"
    " | 0005 0000 | 0007 0002 0064 | 0004 0005 01 e82bd3ea"
    " | 0006 001c" + SSMPINGD_VERSION.encode().hex() + " | 0008 0010" + "00" * 16)
# `ssmping -4 127.0.0.1`: no 5, no 7 -- 38 bytes.
SSMPING4 = vector(
    "51 | 0001 0004 0000399c | 0002 0004 00000001 | 0003 0008 6b0c5bf7 000b24cb"
    " | 0004 0005 01 e82bd3ea")
# `ssmping -6 -v ::1`: the IPv6 group, 17 bytes with its 1-byte family.
SSMPING6_V = vector(
    "51 | 0001 0004 00003a19 | 0002 0004 00000001 | 0003 0008 6b0c5bf8 000b7cf0 | 0005 0000"
    " | 0004 0011 02 ff3e0000000000000000000043211234")
# `asmping -4 224.1.2.234 127.0.0.1`: a group the user chose.
ASMPING4 = vector(
    "51 | 0001 0004 00003dea | 0002 0004 00000001 | 0003 0008 6b0c5bfa 000ba9bf"
    " | 0004 0005 01 e00102ea")
# `asmping -6 -v -s 300 ff3e::4321:1234 ::1`.
ASMPING6_V_S300 = vector(
    "51 | 0001 0004 00003f0c | 0002 0004 00000001 | 0003 0008 6b0c5bfc 000bcc11 | 0005 0000"
    " | 0007 0002 012c | 0004 0011 02 ff3e0000000000000000000043211234")
REAL_REQUESTS = [SSMPING4_V_S100, SSMPING4, SSMPING6_V, ASMPING4, ASMPING6_V_S300]
REAL_IDS = ["ssmping-4-v-s100", "ssmping-4", "ssmping-6-v", "asmping-4", "asmping-6-v-s300"]
CLIENT = {4: "127.0.0.1", 6: "::1"}


def family_of(request: bytes) -> int:
    return ssmping.parse(request).group.version


def version_option(text: str) -> bytes:
    return struct.pack("!HH", 6, len(text)) + text.encode()


def test_real_request_decodes_to_what_the_client_put_in():
    message = ssmping.parse(SSMPING4_V_S100)
    assert message.type == ssmping.REQUEST
    assert (message.pid, message.seq) == (0x40A9, 1)
    assert message.sent_ns == 0x6B0C5C03 * 1_000_000_000 + 0x0007B0C0 * 1000
    assert message.group == V4_GROUP
    assert message.wants_version and message.reply_size == 100
    assert [option.type for option in message.options] == [1, 2, 3, 5, 7, 4]


@pytest.mark.parametrize("request_", REAL_REQUESTS, ids=REAL_IDS)
def test_build_request_lays_options_out_as_ssmping_does(request_):
    message = ssmping.parse(request_)
    assert ssmping.build_request(message.pid, message.seq, message.sent_ns, message.group,
                                 want_version=message.wants_version,
                                 reply_size=message.reply_size) == request_


def test_the_reply_logic_is_ssmpingds_given_its_version_and_no_size_limit():
    # ssmpingd's respond(): copy, version, then pad to the asked 100 bytes.
    message = ssmping.parse(SSMPING4_V_S100)
    reply = ssmping.build_reply(SSMPING4_V_S100, message, SSMPINGD_VERSION, size_limit=65535)
    assert reply == SSMPINGD_REPLY and len(reply) == 100
    decoded = ssmping.parse(reply)
    assert decoded.type == ssmping.REPLY and decoded.server_version == SSMPINGD_VERSION


def test_our_reply_is_the_request_plus_our_version_and_never_padded():
    replies = ssmping.answer(SSMPING4_V_S100, "127.0.0.1", RESPONDER)
    expected = b"A" + SSMPING4_V_S100[1:] + version_option("mcast-echo [asm]")
    assert replies == (Reply(expected), Reply(expected, V4_GROUP))


@pytest.mark.parametrize("request_", REAL_REQUESTS, ids=REAL_IDS)
def test_real_requests_get_a_unicast_and_a_group_reply_bounded_by_the_request(request_):
    family = family_of(request_)
    groups = (V4_GROUP, V6_GROUP, ipaddress.IPv4Address("224.1.2.234"))
    replies = ssmping.answer(request_, CLIENT[family], replace(RESPONDER, groups=groups))
    assert [reply.group for reply in replies] == [None, ssmping.parse(request_).group]
    for reply in replies:
        assert reply.payload[0] == ord("A") and reply.payload[1:len(request_)] == request_[1:]
        assert len(reply.payload) <= len(request_) + 4 + tlv.MAX_TEXT


def test_a_request_without_version_request_is_echoed_byte_for_byte_but_the_type():
    (unicast, group) = ssmping.answer(SSMPING4, "127.0.0.1", RESPONDER)
    assert unicast.payload == group.payload == b"A" + SSMPING4[1:]


def test_padding_stops_at_the_size_limit():
    message = ssmping.parse(SSMPING4_V_S100)
    reply = ssmping.build_reply(SSMPING4_V_S100, message, "x", size_limit=99)
    assert reply == b"A" + SSMPING4_V_S100[1:] + version_option("x")
    padded = ssmping.build_reply(SSMPING4_V_S100, message, "x", size_limit=100)
    assert len(padded) == 100 and padded.endswith(struct.pack("!HH", 8, 43) + bytes(43))


def test_a_size_too_small_for_a_pad_option_adds_none():
    request = ssmping.build_request(1, 1, 0, V4_GROUP, reply_size=40)  # 44-byte request
    message = ssmping.parse(request)
    assert ssmping.build_reply(request, message, "x", size_limit=65535) == b"A" + request[1:]


def test_the_version_option_is_left_out_when_it_would_not_fit_a_datagram():
    filler = struct.pack("!HH", 99, MAX_UDP_PAYLOAD - 1 - 4 - 4) + bytes(MAX_UDP_PAYLOAD - 9)
    request = b"Q" + struct.pack("!HH", 5, 0) + filler
    assert len(request) == MAX_UDP_PAYLOAD
    (unicast, _group) = ssmping.answer(request, "127.0.0.1", RESPONDER)
    assert unicast.payload == b"A" + request[1:]


def test_server_version_is_cut_to_max_text_bytes():
    responder = replace(RESPONDER, server_info="é" * 100)
    (unicast, _group) = ssmping.answer(SSMPING6_V, "::1", responder)
    version = ssmping.parse(unicast.payload).server_version
    assert version == "é" * (tlv.MAX_TEXT // 2)


def test_unknown_and_server_side_options_in_a_request_are_copied_verbatim_in_order():
    request = (b"Q" + struct.pack("!HH", 99, 3) + b"abc" + struct.pack("!HH", 0x7777, 0)
               + version_option("mine") + struct.pack("!HH", 8, 2) + b"zz" + SSMPING4[1:])
    (unicast, group) = ssmping.answer(request, "127.0.0.1", RESPONDER)
    assert unicast.payload == group.payload == b"A" + request[1:]


@pytest.mark.parametrize(("client", "group", "to_group"), [
    ("127.0.0.1", "232.43.211.234", True),
    ("::ffff:127.0.0.1", "232.43.211.234", True),  # a dual-stack socket's view of IPv4
    ("127.0.0.1", "232.43.211.1", False),  # not configured (ssmpingd: not ending in .234)
    ("127.0.0.1", "239.1.2.234", False),  # ends in .234, but not configured
    ("::1", "232.43.211.234", False),  # an IPv4 group in an IPv6 request
    ("127.0.0.1", "ff3e::4321:1234", False),
    ("127.0.0.1", "10.0.0.234", False),  # not multicast: never reflected to
])
def test_the_group_reply_goes_only_to_a_configured_group_of_the_clients_family(
        client, group, to_group):
    responder = replace(RESPONDER, groups=(V4_GROUP, V6_GROUP,
                                           ipaddress.IPv4Address("10.0.0.234")))
    request = ssmping.build_request(7, 1, 0, ipaddress.ip_address(group))
    replies = ssmping.answer(request, client, responder)
    assert replies[0].group is None
    assert [reply.group for reply in replies[1:]] == ([ipaddress.ip_address(group)]
                                                      if to_group else [])


@pytest.mark.parametrize(("client", "group"), [("127.0.0.1", V4_GROUP), ("::1", V6_GROUP)])
def test_a_request_naming_no_group_goes_to_the_default_group_of_its_family(client, group):
    request = SSMPING4[:-9]  # without option 4, as ssmpingd allows
    assert [reply.group for reply in ssmping.answer(request, client, RESPONDER)] == [None, group]
    assert ssmping.answer(request, client, replace(RESPONDER, groups=()))[1:] == ()


@pytest.mark.parametrize("data", [SSMPINGD_REPLY, b"", b"X", b"A\x00"])
def test_replies_and_other_datagrams_are_not_answered(data):
    assert ssmping.answer(data, "127.0.0.1", RESPONDER) == ()


@pytest.mark.parametrize("request_", [
    b"Q\x00", b"Q\x00\x01\x00",  # stray header bytes
    SSMPING4[:-1],  # the group option cut short
    SSMPING4 + b"\x00",  # a stray byte after the last option
    SSMPING4 + struct.pack("!HH", 7, 1) + b"\x01",  # a 1-byte size
    SSMPING4 + struct.pack("!HH", 7, 2) + b"\x00\x64" + struct.pack("!HH", 7, 2) + b"\x01\x00",
    SSMPING4 + SSMPING4[-9:],  # the group twice
    SSMPING4[:-9] + struct.pack("!HH", 4, 4) + b"\xe8\x2b\xd3\xea",  # no family byte
    SSMPING4[:-9] + struct.pack("!HH", 4, 5) + b"\x03\xe8\x2b\xd3\xea",  # family 3
    SSMPING4[:-9] + struct.pack("!HH", 4, 17) + b"\x01" + bytes(16),  # IPv4 with 16 bytes
    SSMPING4[:-9] + struct.pack("!HH", 4, 0),  # an empty group
    b"Q" + struct.pack("!HH", 1, 3) + b"abc",  # a 3-byte PID
    b"Q" + struct.pack("!HH", 3, 4) + b"abcd",  # a 4-byte timestamp
    b"Q" + struct.pack("!HH", 99, 0) * (tlv.MAX_OPTIONS + 1),  # too many options
], ids=["stray-1", "stray-3", "cut", "trailing", "size-1", "size-twice",
        "group-twice", "group-4", "family-3", "group-v4-17", "group-empty", "pid-3",
        "time-4", "options-65"])
def test_malformed_requests_are_refused(request_):
    with pytest.raises(Malformed):
        ssmping.answer(request_, "127.0.0.1", RESPONDER)


def test_max_options_is_still_accepted():
    request = b"Q" + struct.pack("!HH", 99, 0) * (tlv.MAX_OPTIONS - 1) + SSMPING4[-9:]
    assert len(ssmping.answer(request, "127.0.0.1", RESPONDER)) == 2


# --- fuzz: random and mutated datagrams never raise anything but Malformed ---------------

def random_tlvs(rng: random.Random) -> bytes:
    parts = [bytes([rng.choice(b"QAQQ")])]
    for _ in range(rng.randrange(12)):
        kind = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 99, 0xFFFF])
        length = rng.choice([0, 1, 2, 4, 5, 6, 8, 17, 18, rng.randrange(300)])
        value = bytes(rng.randrange(256) for _ in range(length))
        if kind == 4 and rng.random() < 0.5:
            value = rng.choice([b"\x01" + rng.randbytes(4), b"\x02" + rng.randbytes(16)])
            length = len(value)
        parts.append(struct.pack("!HH", kind, length if rng.random() < 0.95 else
                                 rng.randrange(65536)) + value)
    return b"".join(parts)


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        action = rng.randrange(4)
        if action == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif action == 1:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif action == 2 and data:
            del data[rng.randrange(len(data))]
        else:
            data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


def check_bounded(request: bytes, client: str) -> None:
    try:
        replies = ssmping.answer(request, client, RESPONDER)
    except Malformed:
        return
    if not request or request[0] != ord("Q"):
        assert replies == ()
        return
    assert len(replies) in (1, 2) and replies[0].group is None
    for reply in replies:
        assert reply.payload[1:len(request)] == request[1:]
        assert len(reply.payload) <= len(request) + 4 + tlv.MAX_TEXT
        assert reply.group is None or reply.group in RESPONDER.groups


def test_fuzz_random_option_streams():
    rng = random.Random(6450)
    for _ in range(5000):
        check_bounded(random_tlvs(rng), rng.choice(["127.0.0.1", "::1"]))


def test_fuzz_mutated_real_requests():
    rng = random.Random(4321)
    for _ in range(5000):
        request = rng.choice(REAL_REQUESTS + [SSMPINGD_REPLY])
        check_bounded(mutate(rng, request), rng.choice(["127.0.0.1", "::1"]))


def test_fuzz_random_bytes():
    rng = random.Random(91)
    for _ in range(3000):
        check_bounded(b"Q" + rng.randbytes(rng.randrange(80)), "127.0.0.1")
