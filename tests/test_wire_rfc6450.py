"""RFC 6450, the Multicast Ping Protocol (wire/rfc6450.py): byte vectors written from the
RFC's sections 3.1-3.4 and 5, and in the forms omping (a draft-08 implementation) sends."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import struct
import time
from dataclasses import replace

import pytest

from mcast_echo.schema import MAX_SSMPING_GROUPS
from mcast_echo.wire import rfc6450, tlv
from mcast_echo.wire.tlv import Malformed, Reply, Responder
from test_wire_ssmping import mutate

V4_GROUP = ipaddress.IPv4Address("232.43.211.234")
V6_GROUP = ipaddress.IPv6Address("ff3e::4321:1234")
KEY = b"k" * 16
CLIENT = "192.0.2.10"
CLIENT6 = "2001:db8::10"
NOW_NS = 1_700_000_000_250_000_000  # 0x6553f100 s, 250,000 us
RESPONDER = Responder(groups=(V4_GROUP, V6_GROUP), ttl=64, server_info="mcast-echo",
                      session_key=KEY)
OPEN = replace(RESPONDER, session_key=None)  # issues and checks no Session IDs


def vector(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


def sid(client: str = CLIENT, group=V4_GROUP, key: bytes = KEY) -> bytes:
    return rfc6450.session_id(key, ipaddress.ip_address(client), group)


# Section 3.4, Echo Request, in omping's order: Version 2, Client ID "cli1", Sequence 7,
# Client Timestamp, Multicast Group (2-byte family 1), Option Request (12), Session ID.
ECHO_HEAD = vector(
    "51 | 0000 0001 02 | 0001 0004 636c6931 | 0002 0004 00000007"
    " | 0003 0008 6b0c5c03 0007b0c0 | 0004 0006 0001 e82bd3ea | 0005 0002 000c")
ECHO_REQUEST = ECHO_HEAD + vector("000b 0008") + sid()
# Its Echo Reply: type 'A', the options in order but the Session ID, then TTL 64 and the
# Server Timestamp that was asked for.
ECHO_REPLY = (b"A" + ECHO_HEAD[1:] + vector("0009 0001 40 | 000c 0008 6553f100 0003d090"))
# Section 3.4, Init as omping sends it: Version, Client ID, Option Request (Server
# Information), one Multicast Prefix with a full address and full length.
INIT = vector("49 | 0000 0001 02 | 0001 0004 636c6931 | 0005 0002 0006"
              " | 000a 0007 0001 20 e82bd3ea")
INIT_RESPONSE = (vector("53 | 0000 0001 02 | 0001 0004 636c6931 | 0004 0006 0001 e82bd3ea"
                        " | 000b 0008") + sid() + vector("0006 000a") + b"mcast-echo")
REFUSAL = vector("53 | 0000 0001 02 | 0001 0004 636c6931")  # no group: refused


def test_echo_request_decodes():
    message = rfc6450.parse(ECHO_REQUEST)
    assert message.type == rfc6450.ECHO_REQUEST and message.version == 2
    assert (message.client_id, message.seq, message.group) == (b"cli1", 7, V4_GROUP)
    assert message.requested == {rfc6450.SERVER_TIMESTAMP}
    assert message.session_id == sid()
    assert message.client_time_ns == 0x6B0C5C03 * 1_000_000_000 + 0x0007B0C0 * 1000


def test_echo_request_gets_two_identical_replies_unicast_and_to_the_group():
    assert rfc6450.answer(ECHO_REQUEST, CLIENT, NOW_NS, RESPONDER) == (
        Reply(ECHO_REPLY), Reply(ECHO_REPLY, V4_GROUP))
    reply = rfc6450.parse(ECHO_REPLY)
    assert (reply.ttl, reply.server_time_ns, reply.session_id) == (64, NOW_NS, None)


def test_server_timestamp_only_when_asked_for():
    request = ECHO_HEAD[:-6]  # without the Option Request
    (unicast, _group) = rfc6450.answer(request, CLIENT, NOW_NS, OPEN)
    assert unicast.payload == b"A" + request[1:] + vector("0009 0001 40")


def test_build_echo_request_is_the_vector():
    message = rfc6450.parse(ECHO_REQUEST)
    assert rfc6450.build_echo_request(b"cli1", 7, message.client_time_ns, V4_GROUP,
                                      session=sid(), want_time=True) == ECHO_REQUEST


def test_session_id_is_a_keyed_hash_of_client_and_group():
    expected = hmac.new(KEY, b"rfc6450 " + bytes([192, 0, 2, 10]) + V4_GROUP.packed,
                        hashlib.sha256).digest()[:8]
    assert sid() == expected
    assert len({sid(), sid("192.0.2.11"), sid(group=ipaddress.IPv4Address("232.1.1.1")),
                sid(key=b"other")}) == 4


@pytest.mark.parametrize(("request_", "client"), [
    (ECHO_HEAD, CLIENT),  # no Session ID
    (ECHO_HEAD + vector("000b 0000"), CLIENT),  # omping's empty one
    (ECHO_HEAD + vector("000b 0008") + bytes(8), CLIENT),  # a wrong one
    (ECHO_REQUEST, "192.0.2.11"),  # one given to another client
], ids=["none", "empty", "wrong", "other-client"])
def test_a_missing_or_wrong_session_id_gets_a_stop(request_, client):
    # Section 5: a Server Response echoing the sequence number tells the client to stop.
    stop = vector("53 | 0000 0001 02 | 0001 0004 636c6931 | 0002 0004 00000007")
    assert rfc6450.answer(request_, client, NOW_NS, RESPONDER) == (Reply(stop),)
    assert len(stop) <= len(request_)


@pytest.mark.parametrize("request_", [ECHO_HEAD, ECHO_HEAD + vector("000b 0000"),
                                      ECHO_REQUEST], ids=["none", "empty", "any"])
def test_without_a_session_key_session_ids_are_neither_issued_nor_checked(request_):
    replies = rfc6450.answer(request_, CLIENT, NOW_NS, OPEN)
    assert [reply.group for reply in replies] == [None, V4_GROUP]
    assert rfc6450.parse(replies[0].payload).session_id is None


@pytest.mark.parametrize("group", ["232.1.2.3", "10.0.0.1", "ff3e::4321:1234"])
def test_a_group_not_configured_for_the_clients_family_gets_a_stop(group):
    request = rfc6450.build_echo_request(b"c", 9, 0, ipaddress.ip_address(group))
    responder = replace(OPEN, groups=(*OPEN.groups.ordered, ipaddress.ip_address("10.0.0.1")))
    (stop,) = rfc6450.answer(request, CLIENT, NOW_NS, responder)
    assert stop.group is None and stop.payload == vector(
        "53 | 0000 0001 02 | 0001 0001 63 | 0002 0004 00000009")


def test_the_one_byte_family_group_of_ssmping_is_accepted():
    request = (vector("51 | 0000 0001 02 | 0002 0004 00000001 | 0004 0011 02")
               + V6_GROUP.packed)
    replies = rfc6450.answer(request, "::1", NOW_NS, OPEN)
    assert replies == (Reply(b"A" + request[1:] + vector("0009 0001 40")),
                       Reply(b"A" + request[1:] + vector("0009 0001 40"), V6_GROUP))


def test_unknown_and_deprecated_options_are_echoed_in_place_server_ones_are_not():
    # Section 3: unknown options (and 7, 8: section 3.2, Deprecated) are echoed in order;
    # section 3.4 keeps Session ID, Server Information, Multicast Prefix, TTL and Server
    # Timestamp out of an Echo Reply (the last two the server appends itself).
    unknown, seven, eight = (vector("fffc 0003 616263"), vector("0007 0002 0064"),
                             vector("0008 0001 00"))
    server_side = (vector("0006 0001 78") + vector("000a 0003 0001 00")
                   + vector("0009 0001 05") + vector("000c 0008") + bytes(8))
    request = (ECHO_HEAD[:14] + unknown + ECHO_HEAD[14:34] + seven + server_side
               + ECHO_HEAD[34:] + eight)
    (unicast, _group) = rfc6450.answer(request, CLIENT, NOW_NS, OPEN)
    assert unicast.payload == (b"A" + ECHO_HEAD[1:14] + unknown + ECHO_HEAD[14:34] + seven
                               + ECHO_HEAD[34:] + eight
                               + vector("0009 0001 40 | 000c 0008 6553f100 0003d090"))


def test_init_gets_the_group_a_session_id_and_server_information():
    assert rfc6450.answer(INIT, CLIENT, NOW_NS, RESPONDER) == (Reply(INIT_RESPONSE),)
    response = rfc6450.parse(INIT_RESPONSE)
    assert (response.group, response.session_id, response.server_info) == (
        V4_GROUP, sid(), "mcast-echo")


def test_the_session_id_from_init_opens_the_echo_requests():
    (response,) = rfc6450.answer(INIT, CLIENT, NOW_NS, RESPONDER)
    offer = rfc6450.parse(response.payload)
    request = rfc6450.build_echo_request(b"cli1", 1, 0, offer.group, session=offer.session_id)
    assert len(rfc6450.answer(request, CLIENT, NOW_NS, RESPONDER)) == 2


@pytest.mark.parametrize(("prefixes", "client", "group"), [
    ((1,), CLIENT, V4_GROUP),  # section 4: family and zero length, "wildcard"
    ((2,), CLIENT6, V6_GROUP),
    ((ipaddress.ip_network("232.0.0.0/8"),), CLIENT, V4_GROUP),
    ((ipaddress.ip_network("ff3e::/16"),), CLIENT6, V6_GROUP),  # 2 address bytes sent
    ((ipaddress.ip_network("239.0.0.0/8"), ipaddress.ip_network("232.43.128.0/17")),
     CLIENT, V4_GROUP),  # the first prefix that has a group wins
    ((ipaddress.ip_network("239.0.0.0/8"),), CLIENT, None),  # nothing configured there
    ((2,), CLIENT, None),  # an IPv6 group for an IPv4 client
    ((), CLIENT, None),  # no prefix: an information request, no group
])
def test_init_prefixes(prefixes, client, group):
    init = rfc6450.build_init(b"cli1", prefixes)
    (response,) = rfc6450.answer(init, client, NOW_NS, RESPONDER)
    if group is None:
        assert response.payload == REFUSAL
        return
    session = sid(client, group)
    assert response == Reply(REFUSAL + struct.pack("!HH", 4, 2 + len(group.packed))
                             + (b"\x00\x01" if group.version == 4 else b"\x00\x02")
                             + group.packed + vector("000b 0008") + session)


def test_init_prefix_bits_past_the_length_are_ignored():
    init = (vector("49 | 0000 0001 02 | 0001 0004 636c6931")
            + vector("000a 0005 0001 10 e82b | 000a 0006 0001 11 e8 2b ff"))
    message = rfc6450.parse(init)
    assert [prefix[:2] for prefix in message.prefixes] == [(rfc6450.FAMILY_IPV4, 16),
                                                            (rfc6450.FAMILY_IPV4, 17)]
    assert [prefix.span for prefix in message.prefixes] == [
        span_of("232.43.0.0/16"), span_of("232.43.128.0/17")]


def span_of(network: str) -> tuple[int, int]:
    """A Prefix's span: the first and last address of *network*, as integers."""
    net = ipaddress.ip_network(network)
    return int(net.network_address), int(net.broadcast_address)


def test_a_message_without_version_2_gets_only_version_2_back():
    # Section 3.2, Version: a Server Response with version 2, Client ID and Sequence
    # Number echoed, "The server SHOULD NOT include any other options".
    init = vector("49 | 0001 0004 636c6931 | 000a 0003 0001 00")
    assert rfc6450.answer(init, CLIENT, NOW_NS, RESPONDER) == (Reply(REFUSAL),)
    version_3 = ECHO_REQUEST[:5] + b"\x03" + ECHO_REQUEST[6:]
    assert rfc6450.answer(version_3, CLIENT, NOW_NS, RESPONDER) == (Reply(
        REFUSAL + vector("0002 0004 00000007")),)


@pytest.mark.parametrize("message", [ECHO_REPLY, INIT_RESPONSE, REFUSAL, b"", b"X\x00\x00\x00\x00"])
def test_replies_responses_and_unknown_types_are_not_answered(message):
    assert rfc6450.answer(message, CLIENT, NOW_NS, RESPONDER) == ()


@pytest.mark.parametrize("request_", [
    ECHO_HEAD[:-1],  # the last option cut
    ECHO_HEAD + b"\x00\x00",  # stray bytes
    vector("51 | 0000 0001 02 | 0004 0006 0001 e82bd3ea"),  # no Sequence Number (3.4)
    vector("51 | 0000 0001 02 | 0002 0004 00000001"),  # no Multicast Group (3.4)
    vector("51 | 0000 0002 0002 | 0002 0004 00000001 | 0004 0006 0001 e82bd3ea"),  # Version
    ECHO_HEAD + vector("0002 0004 00000008"),  # a second Sequence Number (3)
    ECHO_HEAD + vector("0000 0001 02"),  # a second Version
    ECHO_HEAD[:-6] + vector("0005 0003 000c00"),  # an odd Option Request
    ECHO_HEAD[:-6] + vector("0003 0004 00000000"),  # a 4-byte Client Timestamp
    vector("51 | 0000 0001 02 | 0002 0004 00000001 | 0004 0006 0003 e82bd3ea"),  # family 3
    vector("51 | 0000 0001 02 | 0002 0004 00000001 | 0004 0012 0001") + bytes(16),
    vector("49 | 0000 0001 02 | 000a 0002 0001"),  # a prefix without its length
    vector("49 | 0000 0001 02 | 000a 0003 0001 21"),  # IPv4 /33
    vector("49 | 0000 0001 02 | 000a 0004 0001 03 e8"),  # IPv4 /3 (4..32 allowed)
    vector("49 | 0000 0001 02 | 000a 0004 0001 10 e8"),  # /16 with one address byte
    vector("49 | 0000 0001 02 | 000a 0008 0001 20 e82bd3ea 00"),  # five address bytes
], ids=["cut", "stray", "no-seq", "no-group", "version-2-bytes", "seq-twice",
        "version-twice", "odd-request", "time-4", "family-3", "v4-16", "prefix-2",
        "prefix-33", "prefix-3", "prefix-short", "prefix-long"])
def test_malformed_messages_are_refused(request_):
    with pytest.raises(Malformed):
        rfc6450.answer(request_, CLIENT, NOW_NS, RESPONDER)


def test_an_empty_option_request_asks_for_nothing():
    # ssmping's version request (type 5, length 0) on an RFC 6450 message.
    request = ECHO_HEAD[:-6] + vector("0005 0000")
    (unicast, _group) = rfc6450.answer(request, CLIENT, NOW_NS, OPEN)
    assert unicast.payload == b"A" + request[1:] + vector("0009 0001 40")


def test_unknown_prefix_families_match_nothing():
    init = vector("49 | 0000 0001 02 | 0001 0004 636c6931 | 000a 0003 0003 00")
    assert rfc6450.answer(init, CLIENT, NOW_NS, RESPONDER) == (Reply(REFUSAL),)


# --- fuzz: random and mutated datagrams never raise anything but Malformed ---------------

SEEDS = [ECHO_REQUEST, ECHO_HEAD, INIT, INIT_RESPONSE, ECHO_REPLY,
         rfc6450.build_init(b"x", (2, ipaddress.ip_network("ff3e::/16")), want_info=True)]


def random_message(rng: random.Random) -> bytes:
    parts = [bytes([rng.choice(b"QIQIAS")])]
    if rng.random() < 0.8:
        parts.append(vector("0000 0001 02"))
    for _ in range(rng.randrange(10)):
        kind = rng.choice(list(range(13)) + [0xFFFC, 77])
        length = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 17, 18, 19, rng.randrange(200)])
        value = rng.randbytes(length)
        if kind == 4 and rng.random() < 0.6:
            value = rng.choice([b"\x00\x01" + V4_GROUP.packed, b"\x00\x02" + V6_GROUP.packed,
                                b"\x00\x01" + rng.randbytes(4)])
        if kind == 10 and rng.random() < 0.6:
            value = struct.pack("!HB", rng.choice([1, 2, 3]), rng.randrange(130)) + \
                rng.randbytes(rng.randrange(17))
        parts.append(struct.pack("!HH", kind, len(value)) + value)
    return b"".join(parts)


def check_bounded(request: bytes, client: str, responder: Responder) -> None:
    try:
        replies = rfc6450.answer(request, client, NOW_NS, responder)
    except Malformed:
        return
    assert len(replies) <= 2
    for reply in replies:
        assert reply.group is None or reply.group in responder.groups
        # Echo Reply: + TTL and Server Timestamp; Server Response: + group, Session ID
        # and Server Information, less the prefix and option request that asked for them.
        assert len(reply.payload) <= len(request) + 17 + 22 + 12 + 4 + tlv.MAX_TEXT


def test_fuzz_random_messages():
    rng = random.Random(9903)
    for _ in range(5000):
        check_bounded(random_message(rng), rng.choice([CLIENT, CLIENT6]),
                      rng.choice([RESPONDER, OPEN]))


def test_fuzz_mutated_messages():
    rng = random.Random(2011)
    for _ in range(5000):
        check_bounded(mutate(rng, rng.choice(SEEDS)), rng.choice([CLIENT, CLIENT6]),
                      rng.choice([RESPONDER, OPEN]))


# --- cost: an Init's work does not grow with the configured groups (#18.3) ---------------

def _init_seconds(responder: Responder, init: bytes, client: str) -> float:
    """The fastest of five answers (the machine is shared: the minimum is the cost)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        rfc6450.answer(init, client, NOW_NS, responder)
        best = min(best, time.perf_counter() - started)
    return best


def test_an_init_costs_the_same_against_two_groups_and_a_thousand():
    """62 prefixes that hold no group (the most an Init can carry) used to cost prefixes x
    groups^2 (2 s against 1,024 groups): now each prefix is a lookup in an index."""
    assert MAX_SSMPING_GROUPS >= 1024
    many = Responder(groups=tuple(ipaddress.ip_address(f"232.{n >> 8}.{n & 255}.1")
                                  for n in range(1023)) + (V6_GROUP,),
                     session_key=KEY)
    init = rfc6450.build_init(b"cli1", tuple(ipaddress.ip_network(f"239.200.{n}.0/24")
                                             for n in range(62)))
    assert len(rfc6450.parse(init).options) == tlv.MAX_OPTIONS
    assert rfc6450.answer(init, CLIENT, NOW_NS, many)[0].payload.startswith(REFUSAL)
    few, crowded = _init_seconds(RESPONDER, init, CLIENT), _init_seconds(many, init, CLIENT)
    assert crowded < 3 * few + 0.002, (few, crowded)


def test_the_index_offers_the_first_configured_group_not_the_lowest_address():
    groups = tuple(ipaddress.ip_address(f"232.1.{n}.1") for n in range(200, 0, -1))
    responder = Responder(groups=groups + (V6_GROUP,), session_key=KEY)
    for prefixes, offered in [
            ((1,), "232.1.200.1"),
            ((ipaddress.ip_network("232.1.0.0/16"),), "232.1.200.1"),
            ((ipaddress.ip_network("232.1.7.0/24"),), "232.1.7.1"),
            ((ipaddress.ip_network("232.1.0.0/21"),), "232.1.7.1"),  # 232.1.0-7.x: 7 first
            ((ipaddress.ip_network("232.2.0.0/16"), ipaddress.ip_network("232.1.4.0/22")),
             "232.1.7.1")]:
        (response,) = rfc6450.answer(rfc6450.build_init(b"c", prefixes), CLIENT, NOW_NS,
                                     responder)
        assert str(rfc6450.parse(response.payload).group) == offered, prefixes
