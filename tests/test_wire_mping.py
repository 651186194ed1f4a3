"""The multicast ping dispatcher (wire/mping.py): which dialect, bounded replies, never raising."""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from mcast_echo.wire import mping, rfc6450, ssmping, tlv
from mcast_echo.wire.tlv import Reply, Responder
from test_wire_rfc6450 import ECHO_HEAD, ECHO_REQUEST, INIT, INIT_RESPONSE, sid
from test_wire_ssmping import REAL_REQUESTS, SSMPINGD_REPLY, mutate

V4_GROUP = ipaddress.IPv4Address("232.43.211.234")
V6_GROUP = ipaddress.IPv6Address("ff3e::4321:1234")
RESPONDER = Responder(groups=(V4_GROUP, V6_GROUP), session_key=b"k" * 16)
CLIENT = "192.0.2.10"


@pytest.mark.parametrize(("data", "dialect"), [
    *[(request, mping.SSMPING) for request in REAL_REQUESTS],
    (ECHO_REQUEST, mping.RFC6450),
    (INIT, mping.RFC6450),
    (b"I", mping.RFC6450),  # an Init without Version still gets section 3.2's answer
    (b"Q" + struct.pack("!HH", 99, 1) + b"x" + struct.pack("!HHB", 0, 1, 3), mping.RFC6450),
    (b"Q", mping.SSMPING),
    (b"Q\x00\x00", mping.SSMPING),  # malformed, but ssmping's to refuse
    (SSMPINGD_REPLY, ""), (INIT_RESPONSE, ""), (b"", ""), (b"\x00" * 20, ""),
])
def test_dialect(data, dialect):
    assert mping.dialect(data) == dialect


def test_a_legacy_request_is_answered_as_ssmpingd_would_but_unpadded():
    answer = mping.answer(REAL_REQUESTS[0], "127.0.0.1", 0, RESPONDER)
    assert answer.dialect == mping.SSMPING and not answer.malformed
    assert [reply.group for reply in answer.replies] == [None, V4_GROUP]
    assert answer.replies[0].payload.startswith(b"A" + REAL_REQUESTS[0][1:])


def test_an_rfc6450_echo_request_is_answered_by_rfc6450():
    answer = mping.answer(ECHO_REQUEST, CLIENT, 0, RESPONDER)
    assert answer.dialect == mping.RFC6450 and not answer.malformed
    assert [reply.group for reply in answer.replies] == [None, V4_GROUP]
    assert rfc6450.parse(answer.replies[0].payload).ttl == 64


@pytest.mark.parametrize(("data", "dialect"), [
    (REAL_REQUESTS[1] + b"\x00", mping.SSMPING),
    (ECHO_HEAD[:-1], mping.RFC6450),
    (b"I" + struct.pack("!HHB", 0, 1, 2) + struct.pack("!HH", 10, 1) + b"\x00", mping.RFC6450),
])
def test_malformed_requests_get_no_reply_and_are_reported(data, dialect):
    assert mping.answer(data, CLIENT, 0, RESPONDER) == mping.Answer(dialect, (), malformed=True)


@pytest.mark.parametrize("data", [SSMPINGD_REPLY, INIT_RESPONSE, b"", b"hello"])
def test_other_datagrams_are_ignored(data):
    assert mping.answer(data, CLIENT, 0, RESPONDER) == mping.Answer("", ())


def test_it_never_raises_even_on_a_bad_client_address_or_buffer_type():
    assert mping.answer(ECHO_REQUEST, "not an address", 0, RESPONDER).malformed
    assert mping.answer(memoryview(ECHO_REQUEST), CLIENT, 0, RESPONDER).replies
    assert mping.answer(bytearray(REAL_REQUESTS[0]), "127.0.0.1", 0, RESPONDER).replies
    assert mping.answer(None, CLIENT, 0, RESPONDER) == mping.Answer("", (), malformed=True)


def test_replies_past_the_bounds_are_dropped(monkeypatch):
    request = REAL_REQUESTS[1]
    bound = mping.GROWTH[mping.SSMPING]
    monkeypatch.setattr(ssmping, "answer", lambda data, client, responder: (
        Reply(b"A" * (len(data) + bound)),
        Reply(b"A" * (len(data) + bound + 1), V4_GROUP),
        Reply(b"A", V4_GROUP)))
    answer = mping.answer(request, "127.0.0.1", 0, RESPONDER)
    assert [len(reply.payload) for reply in answer.replies] == [len(request) + bound]


def test_max_growth_covers_the_largest_legitimate_growth():
    responder = replace(RESPONDER, server_info="x" * 500)
    # Legacy: an empty version request grows by the whole server version option.
    legacy = b"Q" + struct.pack("!HH", ssmping.VERSION_REQUEST, 0)
    (unicast, _group) = mping.answer(legacy, "127.0.0.1", 0, responder).replies
    assert len(unicast.payload) - len(legacy) == 4 + tlv.MAX_TEXT
    # RFC 6450: the smallest Init that gets an IPv6 group, a Session ID and information.
    init = (b"I" + struct.pack("!HHB", rfc6450.VERSION, 1, 2)
            + struct.pack("!HHH", rfc6450.OPTION_REQUEST, 2, rfc6450.SERVER_INFORMATION)
            + struct.pack("!HHHB", rfc6450.PREFIX, 3, tlv.FAMILY_IPV6, 0))
    (response,) = mping.answer(init, "2001:db8::1", 0, responder).replies
    offer = rfc6450.parse(response.payload)
    assert offer.group == V6_GROUP and offer.session_id and offer.server_info
    assert len(response.payload) - len(init) <= mping.MAX_GROWTH


# The largest reply of each request type (#18.11): the bound each dialect states is met
# exactly by its worst case, and nothing outgrows it. (request, client, replies, growth)
_FULL_INFO = replace(RESPONDER, server_info="x" * 500)
_NO_SESSIONS = replace(_FULL_INFO, session_key=None)  # an Echo Reply then loses no Session ID
_WORST = {
    "1-byte Init": (b"I", CLIENT, 1, rfc6450.REFUSAL_GROWTH),
    "wrong version": (b"Q" + struct.pack("!HHB", rfc6450.VERSION, 1, 1), CLIENT, 1,
                      rfc6450.REFUSAL_GROWTH - 5),
    "legacy 5-byte version request": (b"Q" + struct.pack("!HH", ssmping.VERSION_REQUEST, 0),
                                      "127.0.0.1", 2, ssmping.MAX_GROWTH),
    "legacy with size 65535": (ssmping.build_request(1, 1, 0, V4_GROUP, want_version=True,
                                                     reply_size=65535), "127.0.0.1", 2,
                               ssmping.MAX_GROWTH),
    "Init, IPv6 wildcard and information": (
        b"I" + struct.pack("!HHB", rfc6450.VERSION, 1, 2)
        + struct.pack("!HHH", rfc6450.OPTION_REQUEST, 2, rfc6450.SERVER_INFORMATION)
        + struct.pack("!HHHB", rfc6450.PREFIX, 3, tlv.FAMILY_IPV6, 0),
        "2001:db8::1", 1, rfc6450.INIT_GROWTH),
    "Echo Request with timestamp": (
        rfc6450.build_echo_request(b"c", 1, 0, V4_GROUP, want_time=True), CLIENT, 2,
        rfc6450.ECHO_GROWTH),
}


@pytest.mark.parametrize("case", sorted(_WORST))
def test_each_request_type_stays_within_its_stated_bound(case):
    request, client, count, growth = _WORST[case]
    answer = mping.answer(request, client, 0, _NO_SESSIONS if "Echo" in case else _FULL_INFO)
    assert [len(reply.payload) - len(request) for reply in answer.replies] == [growth] * count
    assert growth <= mping.GROWTH[answer.dialect] <= mping.MAX_GROWTH
    assert sum(reply.group is None for reply in answer.replies) == 1  # one to the client


def test_the_stated_bounds_are_the_worst_cases():
    """The README's Security section states the bounds the code enforces."""
    assert max(growth for *_, growth in _WORST.values()) == mping.MAX_GROWTH
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    security = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    for growth in (*mping.GROWTH.values(), rfc6450.ECHO_GROWTH, rfc6450.REFUSAL_GROWTH):
        assert f"by at most {growth}" in security or f"at most {growth} bytes" in security


def test_a_session_issued_by_init_is_accepted_by_the_dispatcher():
    (response,) = mping.answer(INIT, CLIENT, 0, RESPONDER).replies
    assert rfc6450.parse(response.payload).session_id == sid()


# --- fuzz ------------------------------------------------------------------------------

def test_fuzz_both_dialects_never_raise_and_stay_bounded():
    rng = random.Random(1234)
    seeds = REAL_REQUESTS + [SSMPINGD_REPLY, ECHO_REQUEST, ECHO_HEAD, INIT, INIT_RESPONSE]
    responders = [RESPONDER, replace(RESPONDER, session_key=None)]
    for _ in range(8000):
        if rng.random() < 0.2:
            data = bytes([rng.choice(b"QIAS")]) + rng.randbytes(rng.randrange(64))
        else:
            data = mutate(rng, rng.choice(seeds))
        responder = rng.choice(responders)
        answer = mping.answer(data, rng.choice([CLIENT, "::1", "127.0.0.1"]), 0, responder)
        assert len(answer.replies) <= mping.MAX_REPLIES
        assert not (answer.malformed and answer.replies)
        for reply in answer.replies:
            assert len(reply.payload) <= len(data) + mping.MAX_GROWTH
            assert reply.group is None or reply.group in responder.groups
