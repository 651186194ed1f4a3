"""The fast echo path's IPv6 checks (batchpath.py runs the batches and sends the echoes).

A source is read for the whole batch through three strided views (the two 64-bit halves
of sin6_addr and sin6_scope_id); each *distinct* source of a batch is then turned into
the integer policy.py keys it by (one pack and one int.from_bytes), so the checks cost
per source, not per datagram. The rules are policy.verdict's, written out per batch as
the IPv4 path's are: an impossible source (only one whose first byte is 0x00 or 0xff
can be, policy.impossible_ipv6), one of this host's own addresses that did not come in
on lo (a link-local one with its scope: policy.own_ipv6_key), 'allow' and an SSM
listener's 'sources', the send guard, the rate limit.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import Optional

from ..net import mmsg
from ..net.ancillary import IPV6_PKTINFO
from ..wire import probe
from .batchpath import BatchEchoes
from .echosink import MSG_TRUNC, PROBE_MAGIC_WORD, EchoSink
from .policy import LOOPBACK_IFINDEX, Policy, impossible_ipv6, own_ipv6_key
from .receivetimes import ReceiveTimes
from .sendguard import SendGuard

_HALVES = struct.Struct("=QQ")  # sin6_addr as the batch's two views read it


def _key(high: int, low: int) -> int:
    """A source as policy.py keys it: the big-endian integer of its sixteen bytes."""
    return int.from_bytes(_HALVES.pack(high, low), "big")


class BatchPath6(BatchEchoes):
    """recvmmsg/sendmmsg for IPv6 listeners (ASM and SSM, any scope), every reply mode."""

    ipv6 = True

    def __init__(self, guard: SendGuard, receive_times: Optional[ReceiveTimes] = None,
                 regroup: bool = True) -> None:
        super().__init__(guard, receive_times, regroup)
        # the last one-source batch's (source, key, whether it is ours): _real_sources
        self._last_source: tuple = ((), 0, False)

    def _echo_one(self, fd: int, responder: EchoSink, now: float) -> bool:
        """As BatchPath._echo_one, for IPv6."""
        batch = self.batch
        policy = responder.policy
        listener = responder.listener
        length = batch.lengths[0]
        if (not batch.port_high_bytes[0]  # a port below 256 (0 among them): to _echo
                or length > listener.max_datagram
                or batch.first_payload_words[0] == PROBE_MAGIC_WORD):
            return False
        key = _key(batch.addr_highs[0], batch.addr_lows[0])
        own = policy.own_addresses
        if now >= own.due:  # OwnAddresses.ipv6(), written out: this runs per round trip
            own.refresh(now)
        if ((not 0 < key >> 120 < 0xFF and impossible_ipv6(key, policy.loopback_peers))
                or (own_ipv6_key(key, batch.scopes[0]) in own.ipv6_keys
                    and not (batch.first_cmsg_types[0] == IPV6_PKTINFO  # came in on lo
                             and batch.arrival_ifindexes[0] == LOOPBACK_IFINDEX))):
            return False
        return self._echo_lone_if_admitted(fd, responder, length, key, now)

    def _passing_sources(self, count: int, responder: EchoSink,
                         now: float) -> Optional[dict[int, int]]:
        """As BatchPath._passing_sources, for IPv6."""
        batch = self.batch
        policy = responder.policy
        listener = responder.listener
        if 0 not in batch.port_high_bytes[:count] \
                and max(batch.lengths[:count]) <= listener.max_datagram:
            counts = self._real_sources(count, policy, now)
            unresolved = self.unresolved if listener.reply != "group" else None
            if (counts is not None
                    and (not policy.filters_sources or all(map(policy.admitted_by_acl, counts)))
                    and (not unresolved or unresolved.keys().isdisjoint(counts))):
                return counts
        return None

    def _real_sources(self, count: int, policy: Policy,
                      now: float) -> Optional[dict[int, int]]:
        """{source key: its datagrams} of a batch whose every source may be a real peer;
        None if one cannot be (impossible, or this host's own address and some datagram
        of the batch did not come in on lo): the walk then finds which."""
        batch = self.batch
        own = policy.own_addresses
        if now >= own.due:  # OwnAddresses.ipv6(), written out (one call fewer per batch)
            own.refresh(now)
        own_keys = own.ipv6_keys
        loopback_peers = policy.loopback_peers
        counts: dict[int, int] = {}
        ours = False
        pack, from_bytes = _HALVES.pack, int.from_bytes
        highs, lows = batch.addr_highs[:count], batch.addr_lows[:count]
        scopes = batch.scopes[:count]
        if highs[1:] == highs[:-1] and lows[1:] == lows[:-1] and scopes[1:] == scopes[:-1]:
            # one source (the common batch): three C-level compares of strided views,
            # ~10x cheaper than counting the batch's tuples; and most often the source of
            # the batch before, whose answers hold while the rules' inputs are the same
            source = (highs[0], lows[0], scopes[0], own_keys, loopback_peers)
            last = self._last_source
            if last[0] == source:
                key, ours = last[1], last[2]
            else:
                key = from_bytes(pack(source[0], source[1]), "big")
                if not 0 < key >> 120 < 0xFF and impossible_ipv6(key, loopback_peers):
                    return None
                ours = own_ipv6_key(key, source[2]) in own_keys
                self._last_source = (source, key, ours)
            return None if ours and not self._all_on_lo(count) else {key: count}
        for (high, low, scope), datagrams in Counter(zip(highs, lows, scopes)).items():
            key = from_bytes(pack(high, low), "big")
            if not 0 < key >> 120 < 0xFF and impossible_ipv6(key, loopback_peers):
                return None
            if own_ipv6_key(key, scope) in own_keys:
                ours = True
            counts[key] = counts.get(key, 0) + datagrams
        return None if ours and not self._all_on_lo(count) else counts

    def _all_on_lo(self, count: int) -> bool:
        """Whether every datagram of the batch came in on lo (one of this host's own
        addresses is then a real peer, as policy.verdict says)."""
        batch = self.batch
        return (batch.arrivals_in_place(count)
                and set(batch.arrival_ifindexes[:count]) == {LOOPBACK_IFINDEX})

    def _echo_each(self, fd: int, count: int, responder: EchoSink, now: float,
                   over: Optional[dict[int, int]], rated: bool) -> None:
        """As BatchPath._echo_each, for IPv6."""
        batch = self.batch
        words, scopes, source_ports = batch.words, batch.scopes, batch.source_ports
        lengths, send_lengths = batch.lengths, batch.send_lengths
        first_payload_words = batch.first_payload_words
        policy = responder.policy
        filters_sources, admitted_by_acl = policy.filters_sources, policy.admitted_by_acl
        loopback_peers = policy.loopback_peers
        own_keys = policy.own_addresses.ipv6(now)
        max_datagram = responder.listener.max_datagram
        flags_word, hdr_words = mmsg.FLAGS_WORD, mmsg.HDR_WORDS
        min_probe = probe.MIN_TRAILER_PROBE
        keys = [_key(high, low)
                for high, low in zip(batch.addr_highs[:count], batch.addr_lows[:count])]
        drops: dict[int, str] = {}
        passed: list[int] = []
        asking: list[int] = []
        for i in range(count):
            key = keys[i]
            length = lengths[i]
            if not source_ports[i] or (not 0 < key >> 120 < 0xFF
                                       and impossible_ipv6(key, loopback_peers)):
                drops[i] = "source"
            elif ((own := own_ipv6_key(key, scopes[i])) in own_keys
                  and policy.own_address(own, batch.ancillary(i)[0], now)):
                drops[i] = "own-address"
            elif filters_sources and not admitted_by_acl(key):
                drops[i] = policy.refusal(key)
            elif words[i * hdr_words + flags_word] & MSG_TRUNC:
                drops[i] = "truncated"
            elif length > max_datagram:
                drops[i] = "size"
            else:
                send_lengths[i] = length
                passed.append(i)
                if length >= min_probe and first_payload_words[i] == PROBE_MAGIC_WORD:
                    asking.append(i)
        self._finish_walk(fd, count, responder, now, (drops, passed, asking), keys,
                          over, rated)
