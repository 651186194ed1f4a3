"""The fast echo path's IPv4 checks (batchpath.py runs the batches and sends the echoes).

A source is the raw integer of its four address bytes, read for the whole batch through
one strided view (``batch.sources``), as policy.py keys it.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Optional

from ..net import mmsg
from ..wire import probe
from .batchpath import BatchEchoes
from .echosink import MSG_TRUNC, PROBE_MAGIC_WORD, EchoSink


class BatchPath(BatchEchoes):
    """recvmmsg/sendmmsg for IPv4 listeners, every reply mode."""

    ipv6 = False

    def _echo_one(self, fd: int, responder: EchoSink, now: float) -> bool:
        """A lone datagram (a wake-up for one: the round-trip case) that passes every check
        goes straight back; False leaves it to _echo (a refused admit takes no token, so
        the walk finds the source over its rate again)."""
        batch = self.batch
        policy = responder.policy
        length = batch.lengths[0]
        source = batch.sources[0]
        own = policy.own_addresses
        if now >= own.due:  # OwnAddresses.ipv4(), written out: this runs per round trip
            own.refresh(now)
        own_ipv4 = own.ipv4_keys
        listener = responder.listener
        if (batch.first_octets[0] in policy.refused_octets
                or not batch.port_high_bytes[0]  # a port below 256 (0 among them): to _echo
                or (own_ipv4 is not None and source in own_ipv4)
                or length > listener.max_datagram
                or batch.first_payload_words[0] == PROBE_MAGIC_WORD):
            return False
        return self._echo_lone_if_admitted(fd, responder, length, source, now)

    def _passing_sources(self, count: int, responder: EchoSink,
                         now: float) -> Optional[Mapping[int, int]]:
        """{source: its datagrams in the batch} if every one of the *count* datagrams passes
        *responder*'s checks but the rate limit; None if one may not (the walk finds it)."""
        batch = self.batch
        policy = responder.policy
        lengths = batch.lengths[:count]
        if (policy.refused_octets.isdisjoint(batch.first_octets[:count])
                and 0 not in batch.port_high_bytes[:count]  # no source port below 256
                and max(lengths) <= responder.listener.max_datagram):
            sources = batch.sources[:count]
            distinct = set(sources)
            own = policy.own_addresses
            if now >= own.due:  # OwnAddresses.ipv4(), written out (one call fewer per batch)
                own.refresh(now)
            own_ipv4 = own.ipv4_keys
            unresolved = self.unresolved if responder.listener.reply != "group" else None
            if ((own_ipv4 is None or own_ipv4.isdisjoint(distinct))
                    and (not policy.filters_sources
                         or all(map(policy.admitted_by_acl, distinct)))
                    and (not unresolved or unresolved.keys().isdisjoint(distinct))):
                return {sources[0]: count} if len(distinct) == 1 else Counter(sources)
        return None

    def _echo_each(self, fd: int, count: int, responder: EchoSink, now: float,
                   over: Optional[dict[int, int]], rated: bool) -> None:
        """The walk for a batch with an exception: a drop, a trailer, a source over its rate
        or held back by the send guard (sendguard.py).

        *rated*: the rate limit was already applied to the whole batch (every datagram
        passed the other checks), and *over* is its result; otherwise it is applied
        (_finish_walk) to the datagrams that pass them.
        """
        batch = self.batch
        words, first_octets, sources = batch.words, batch.first_octets, batch.sources
        lengths, send_lengths = batch.lengths, batch.send_lengths
        first_payload_words, family_ports = batch.first_payload_words, batch.family_ports
        policy = responder.policy
        refused_octets, filters_sources = policy.refused_octets, policy.filters_sources
        admitted_by_acl = policy.admitted_by_acl
        own_ipv4, no_port = policy.own_addresses.ipv4(now), mmsg.NO_PORT_WORD
        max_datagram = responder.listener.max_datagram
        flags_word, hdr_words = mmsg.FLAGS_WORD, mmsg.HDR_WORDS
        min_probe = probe.MIN_TRAILER_PROBE
        drops: dict[int, str] = {}
        passed: list[int] = []
        asking: list[int] = []
        for i in range(count):
            length = lengths[i]
            if first_octets[i] in refused_octets or family_ports[i] == no_port:
                drops[i] = "source"
            elif (own_ipv4 is not None and sources[i] in own_ipv4
                  and policy.own_address(sources[i], batch.ancillary(i)[0], now)):
                drops[i] = "own-address"
            elif filters_sources and not admitted_by_acl(sources[i]):
                drops[i] = policy.refusal(sources[i])
            elif words[i * hdr_words + flags_word] & MSG_TRUNC:
                drops[i] = "truncated"
            elif length > max_datagram:
                drops[i] = "size"
            else:
                send_lengths[i] = length
                passed.append(i)
                if length >= min_probe and first_payload_words[i] == PROBE_MAGIC_WORD:
                    asking.append(i)
        self._finish_walk(fd, count, responder, now, (drops, passed, asking), sources,
                          over, rated)
