"""The fast echo path: recvmmsg/sendmmsg through ctypes (net/mmsg.py), 64 datagrams per
system call, a batch with no exception checked and sent by C-level operations on
strided views of the preallocated buffers (see echosink.py for the contract).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import Counter
from typing import Any, Optional

from ..net import mmsg
from ..wire import probe
from .echosink import DROP_TEXT, MSG_TRUNC, PROBE_MAGIC_WORD, EchoSink, log
from .policy import SourceRateLimiter
from .receivetimes import ReceiveTimes
from .sendguard import SendGuard

FAST_BATCH = 64  # datagrams per recvmmsg
FAST_ROUNDS = 4  # recvmmsg calls per wake-up: 256 datagrams, as the plain path
HELD = "held"  # a probe's echo handed to delayed.py for its --spread: not sent with the batch


class BatchPath:
    name = f"fast (recvmmsg/sendmmsg, {FAST_BATCH} per call)"

    def __init__(self, guard: SendGuard) -> None:
        self.batch = mmsg.Batch(FAST_BATCH)
        self.guard = guard
        self.unresolved = guard.unresolved(False)  # IPv4 only: the same dict, kept current
        self.receive_times = ReceiveTimes()  # a probe's T2 (receivetimes.py)

    def run(self, sock: socket.socket, responder: EchoSink, now: float) -> int:
        fd = sock.fileno()
        taken = 0
        watch = responder.send_watch
        for _ in range(FAST_ROUNDS):
            try:
                count = self.batch.receive(fd)
            except OSError as e:  # e.g. a queued ICMP error; the socket stays usable
                responder.drop("recv-error", 1, "receive failed: %s", e)
                break
            if count == 0:
                break
            taken += count
            if count == 1 and self._echo_one(fd, responder, now):
                break
            self._echo(fd, count, responder, now)
            if responder.echoed >= watch.check_echoed:  # a burst: look before the next batch
                self.guard.look(sock, watch, responder.echoed, False, now)
            if count < FAST_BATCH:
                break
        if now >= watch.check_at:  # one float compare per wake-up (sendguard.py)
            self.guard.check(sock, watch, False, now)
        if now >= self.receive_times.due:
            self.receive_times.expire(now)
        return taken

    def _echo_one(self, fd: int, responder: EchoSink, now: float) -> bool:
        """A lone datagram (a wake-up for one: the round-trip case) that passes every check
        goes straight back; False leaves it to _echo (a refused admit takes no token, so
        the walk finds the source over its rate again)."""
        batch = self.batch
        policy = responder.policy
        length = batch.lengths[0]
        source = batch.sources[0]
        limiter = policy.limiter
        own = policy.own_addresses
        if now >= own.due:  # OwnAddresses.ipv4(), written out: this runs per round trip
            own.refresh(now)
        own_ipv4 = own.ipv4_keys
        unresolved = self.unresolved
        if (batch.first_octets[0] in policy.refused_octets
                or not batch.port_high_bytes[0]  # a port below 256 (0 among them): to _echo
                or (own_ipv4 is not None and source in own_ipv4)
                or length > responder.listener.max_datagram
                or batch.first_payload_words[0] == PROBE_MAGIC_WORD
                or (policy.filters_sources and not policy.admitted_by_acl(source))
                or (unresolved and source in unresolved)
                or (limiter is not None and limiter.admit(source, 1, now) == 0)):
            return False
        batch.send_lengths[0] = length
        responder.received += 1
        responder.received_bytes += length
        sent, code = batch.send(fd, 0, 1)
        if sent:
            responder.echoed += 1
            responder.echoed_bytes += length
        else:
            responder.send_watch.check_at = 0.0  # EAGAIN, ENOBUFS: look at the send queue
            responder.drop("send-error", 1, "echo to %s:%d failed: %s", *batch.peer(0),
                           errno.errorcode.get(code, code))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("echoed %d bytes to %s:%d", length, *batch.peer(0))
        return True

    def _echo(self, fd: int, count: int, responder: EchoSink, now: float) -> None:
        """Decide, fix up and send the echoes of the *count* datagrams in the buffers.

        The common case -- every source a real peer (no source port 0, none of this
        host's own addresses) inside 'allow', not held back by the send guard and within
        its rate, every datagram within max_datagram, no probe asking for a trailer -- is
        checked and sent with a few C-level operations on the batch's strided views; only a
        batch with an exception walks its datagrams one by one (_echo_each). The kernel
        never cuts a datagram here (PAYLOAD_STRIDE is above any UDP payload), so MSG_TRUNC
        is looked at only on that walk. A source port below 256 (0 is refused; the others
        are rare) takes the walk too. This host's own addresses are looked up (once per
        distinct source) only while some interface has accept_local=1 (policy.py).
        """
        batch = self.batch
        responder.received += count
        responder.received_bytes += sum(batch.lengths[:count])
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
            unresolved = self.unresolved
            if ((own_ipv4 is None or own_ipv4.isdisjoint(distinct))
                    and (not policy.filters_sources
                         or all(map(policy.admitted_by_acl, distinct)))
                    and (not unresolved or unresolved.keys().isdisjoint(distinct))):
                over = _over_rate(policy.limiter, sources, distinct, count, now)
                if over is None and PROBE_MAGIC_WORD not in batch.first_payload_words[:count]:
                    batch.send_lengths[:count] = lengths
                    self._send(fd, count, None, responder)
                    return
                self._echo_each(fd, count, responder, now, over, rated=True)
                return
        self._echo_each(fd, count, responder, now, None, rated=False)

    def _echo_each(self, fd: int, count: int, responder: EchoSink, now: float,
                   over: Optional[dict[int, int]], rated: bool) -> None:
        """The walk for a batch with an exception: a drop, a trailer, a source over its rate
        or held back by the send guard (sendguard.py).

        *rated*: the rate limit was already applied to the whole batch (every datagram
        passed the other checks), and *over* is its result; otherwise it is applied here
        to the datagrams that pass them.
        """
        batch = self.batch
        words, first_octets, sources = batch.words, batch.first_octets, batch.sources
        lengths, send_lengths = batch.lengths, batch.send_lengths
        first_payload_words, family_ports = batch.first_payload_words, batch.family_ports
        policy = responder.policy
        refused_octets, filters_sources = policy.refused_octets, policy.filters_sources
        admitted_by_acl = policy.admitted_by_acl
        own_ipv4, no_port = policy.own_addresses.ipv4(now), mmsg.NO_PORT_WORD
        unresolved = self.unresolved
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
        if not rated and passed:
            admitted = [sources[i] for i in passed]
            over = _over_rate(policy.limiter, admitted, set(admitted), len(passed), now)
        if over:
            for i in passed:  # a source over its rate keeps its first datagrams of the batch
                left = over.get(sources[i])
                if left is not None:
                    if left > 0:
                        over[sources[i]] = left - 1
                    else:
                        drops[i] = "rate"
        if unresolved:  # the send guard's (sendguard.py): after the rate, as on the plain path
            for i in passed:
                if sources[i] in unresolved and i not in drops:
                    drops[i] = "unresolved"
        stamps = self._trailers(asking, drops, responder, now) if asking else None
        if drops:
            self._log_drops(drops, responder)
        unsent: Optional[dict[int, str]] = drops
        if stamps and HELD in stamps.values():  # echoes held for --spread: not sent now
            unsent = {**drops, **{i: HELD for i, at in stamps.items() if at is HELD}}
        self._send(fd, count, unsent, responder, stamps)

    def _trailers(self, asking: list[int], drops: Optional[dict[int, str]],
                  responder: EchoSink, now: float) -> Optional[dict[int, Any]]:
        """Write the trailer of each probe that asks; {index: kernel receive time} of those
        whose residence time _send stamps, HELD for those handed to delayed.py for their
        --spread (None when there are neither). A probe's receive time is its own, or its
        batch's while its socket's datagrams do not carry theirs (receivetimes.py)."""
        batch = self.batch
        sock = responder.sock
        stamps: Optional[dict[int, Any]] = None
        batch_ns: Optional[int] = None
        probed = False
        for i in asking:
            if drops and i in drops:
                continue
            length = batch.lengths[i]
            data = batch.payload(i, length)
            if probe.wants_trailer(data):
                ifindex, ttl, received_ns = batch.ancillary(i)
                if received_ns is None:
                    if batch_ns is None:
                        batch_ns = self.receive_times.of_batch(sock) if sock else None
                        # without the kernel's time, the residence starts now
                        batch_ns = batch_ns or time.time_ns()
                    received_ns = batch_ns
                echo = probe.with_trailer(data, responder.arrival(ifindex, ttl, received_ns))
                if echo is not data and len(echo) == length:
                    probed = True
                    residence = length >= probe.RESIDENCE_PROBE
                    spread = probe.spread_of(data)
                    if spread and sock is not None and responder.delayed.hold(
                            spread, sock, responder, echo,
                            ((batch.peer(i), None),), received_ns if residence else None):
                        stamps = stamps if stamps is not None else {}
                        stamps[i] = HELD  # sent when due, and counted then
                        continue
                    batch.set_payload(i, echo)
                    if residence:
                        stamps = stamps if stamps is not None else {}
                        stamps[i] = received_ns
        if probed and sock is not None:  # probes come: the next ones get their own time
            self.receive_times.keep(sock, now)
        return stamps

    def _stamp(self, stamps: dict[int, Any], start: int, end: int) -> list[int]:
        """T3 for the echoes start..end-1 that carry a residence time: one clock read,
        then nothing but packing it, then the caller's sendmmsg. The residence times."""
        payloads, lengths = self.batch.payloads, self.batch.lengths
        now_ns = time.time_ns()
        return [probe.pack_residence(payloads, i * mmsg.PAYLOAD_STRIDE + lengths[i],
                                     received_ns, now_ns)
                for i, received_ns in stamps.items()
                if start <= i < end and received_ns is not HELD]

    def _log_drops(self, drops: dict[int, str], responder: EchoSink) -> None:
        """Count every drop, but word a log line only for the first of each reason."""
        first: dict[str, int] = {}
        totals: dict[str, int] = {}
        for i, reason in drops.items():
            totals[reason] = totals.get(reason, 0) + 1
            first.setdefault(reason, i)
        batch = self.batch
        for reason, i in first.items():
            peer = batch.peer(i)
            if reason == "size":
                length = batch.lengths[i]
                responder.drop("size", totals[reason], "datagram of %d bytes from %s:%d is "
                               "above max_datagram (%d); dropped", length, *peer,
                               responder.listener.max_datagram)
            else:
                responder.drop(reason, totals[reason], DROP_TEXT[reason], *peer)

    def _send(self, fd: int, count: int, drops: Optional[dict[int, str]],
              responder: EchoSink, stamps: Optional[dict[int, Any]] = None) -> None:
        """sendmmsg over each run of consecutive admitted echoes (one run when none dropped
        or held back).

        *stamps*: {index: kernel receive time} of the probes whose residence time goes in
        their last 8 bytes, stamped with one clock read just before each sendmmsg."""
        start = 0
        while start < count:
            if drops:
                while start < count and start in drops:
                    start += 1
                end = start
                while end < count and end not in drops:
                    end += 1
            else:
                end = count
            while start < end:
                held = self._stamp(stamps, start, end) if stamps else None
                sent, code = self.batch.send(fd, start, end - start)
                if held:
                    for residence_ns in held:
                        responder.residence.observe(residence_ns)
                responder.echoed += sent
                responder.echoed_bytes += sum(self.batch.lengths[start:start + sent])
                start += sent
                if code or not sent:  # not sent without an errno: never seen; do not spin
                    code = code or errno.EIO  # ENOBUFS, EAGAIN, ECONNREFUSED, EPERM: skip it
                    responder.send_watch.check_at = 0.0  # look at the send queue (sendguard.py)
                    responder.drop("send-error", 1, "echo to %s:%d failed: %s",
                                   *self.batch.peer(start), errno.errorcode.get(code, code))
                    start += 1
        if log.isEnabledFor(logging.DEBUG):
            for i in range(count):
                if not (drops and i in drops):
                    log.debug("echoed %d bytes to %s:%d", self.batch.lengths[i],
                              *self.batch.peer(i))


def _over_rate(limiter: Optional[SourceRateLimiter], sources, distinct: set, count: int,
               now: float) -> Optional[dict[int, int]]:
    """Take a batch's datagrams from their sources' buckets: None if all may pass, else
    {source: how many of its datagrams in the batch may} for the sources over their rate."""
    if limiter is None:
        return None
    if len(distinct) == 1:
        (source,) = distinct
        allowed = limiter.admit(source, count, now)
        return None if allowed == count else {source: allowed}
    over = None
    for source, wanted in Counter(sources).items():
        allowed = limiter.admit(source, wanted, now)
        if allowed < wanted:
            if over is None:
                over = {}
            over[source] = allowed
    return over
