"""The fast echo path, what both families share: recvmmsg/sendmmsg through ctypes
(net/mmsg.py), 64 datagrams per system call, a batch with no exception checked and sent
by C-level operations on strided views of the preallocated buffers (see echosink.py for
the contract).

BatchEchoes runs the batches (a shared port socket's listener by listener) and walks a
batch that has an exception after its family's checks; what it sends -- the probes'
trailers and the echoes to the sender, to the group (``reply: group``: the group on the
sender's port, out of the arrival interface, as the plain path does) or both, each a
sendmmsg over the batch, so ``both`` costs a second system call and nothing per datagram
-- is batchsend.py's BatchSends, which it inherits. The family's checks, the whole batch's and the
walk's, live in batchpath4.py (BatchPath, IPv4) and batchpath6.py (BatchPath6, IPv6).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections import Counter
from operator import attrgetter
from typing import Any, Callable, Mapping, Optional, Sequence

from ..net import mmsg
from .batchsend import HELD, BatchSends
from .echosink import DROP_TEXT, PROBE_MAGIC_WORD, EchoSink, PortReader, log
from .policy import SourceRateLimiter
from .receivetimes import ReceiveTimes
from .sendguard import SendGuard

FAST_BATCH = 64  # datagrams per recvmmsg
FAST_ROUNDS = 4  # recvmmsg calls per wake-up: 256 datagrams, as the plain path
_PROFILE = attrgetter("batch_profile")  # a port socket's listeners: responder.py
PATH_NAME = f"fast (recvmmsg/sendmmsg, {FAST_BATCH} per call)"



class BatchEchoes(BatchSends):
    """One family's batched path (``ipv6``: which); its subclass checks the batches."""

    ipv6 = False
    name = PATH_NAME

    def __init__(self, guard: SendGuard, receive_times: Optional[ReceiveTimes] = None,
                 regroup: bool = True) -> None:
        """*receive_times*, *regroup*: see _regrouped (a path's second batch)."""
        self.batch = mmsg.Batch(FAST_BATCH, self.ipv6)
        self.guard = guard
        self.unresolved = guard.unresolved(self.ipv6)  # the same dict, kept current
        self.receive_times = receive_times or ReceiveTimes()  # a probe's T2 (receivetimes.py)
        self._group_sockaddrs: dict[str, bytes] = {}  # group -> its sockaddr (mmsg.py)
        # A port socket's batch with several listeners' datagrams is served a listener at a
        # time: each one's datagrams gathered into this second path's batch (run_shared).
        self._regrouped = type(self)(guard, self.receive_times, False) if regroup else None

    def run(self, sock: socket.socket, responder: EchoSink, now: float) -> int:
        """Echo what is queued on *responder*'s own socket, up to FAST_ROUNDS batches."""

        def echo(fd: int, count: int) -> None:
            if count == 1 and self._echo_one(fd, responder, now):
                return
            self._echo(fd, count, responder, now)
        return self._rounds(sock, responder, echo, now)

    def run_shared(self, port_socket: PortReader, now: float) -> int:
        """Echo what is queued on a port socket (sharedsocket.py), each datagram as the
        listener of the group it came to: a batch for one listener (the common case when
        traffic comes to one group) is served as on its own socket; one that mixes several
        is served a listener at a time, each one's datagrams gathered into a second batch
        (mmsg.Batch.gather); a stray (not to one of the socket's groups) is dropped."""
        by_group = port_socket.by_group
        batch = self.batch

        def echo(fd: int, count: int) -> None:
            port_socket.echoed += count  # (what the send guard's burst look counts)
            owners = list(map(by_group.get, batch.destination_keys(count)))
            first = owners[0]
            if first is not None and owners.count(first) == count:
                if count == 1 and self._echo_one(fd, first, now):
                    return
                self._echo(fd, count, first, now)
                return
            self._echo_mixed(fd, count, owners, port_socket, now)
        return self._rounds(port_socket.sock, port_socket, echo, now)

    def _rounds(self, sock: socket.socket, owner: Any, echo: Callable[[int, int], None],
                now: float) -> int:
        """Up to FAST_ROUNDS batches off *sock*, each handed to *echo* (fd, count); the send
        guard's look at *owner*'s (the socket's) send queue. Datagrams taken."""
        fd = sock.fileno()
        taken = 0
        watch = owner.send_watch
        for _ in range(FAST_ROUNDS):
            try:
                count = self.batch.receive(fd)
            except OSError as e:  # e.g. a queued ICMP error; the socket stays usable
                owner.drop("recv-error", 1, "receive failed: %s", e)
                break
            if count == 0:
                break
            taken += count
            echo(fd, count)
            if owner.echoed >= watch.check_echoed:  # a burst: look before the next batch
                self.guard.look(sock, watch, owner.echoed, self.ipv6, now)
            if count < FAST_BATCH:
                break
        if now >= watch.check_at:  # one float compare per wake-up (sendguard.py)
            self.guard.check(sock, watch, self.ipv6, now)
        if now >= self.receive_times.due:
            self.receive_times.expire(now)
        return taken

    def _echo_mixed(self, fd: int, count: int, owners: list, port_socket: PortReader,
                    now: float) -> None:
        """A port socket's batch of several listeners' datagrams (*owners*: each one's
        responder, None for a stray): checked and sent as one if their listeners answer
        alike (_echo_alike), else each listener's gathered into the second batch and
        served there, in the order their first datagrams came."""
        if None not in owners and self._echo_alike(fd, count, owners, port_socket, now):
            return
        by_owner: dict[Any, list[int]] = {}
        for index, owner in enumerate(owners):
            indices = by_owner.get(owner)
            if indices is None:
                by_owner[owner] = [index]
            else:
                indices.append(index)
        strays = by_owner.pop(None, None)
        if strays:
            port_socket.stray(len(strays), self.batch.peer(strays[0]))
        regrouped = self._regrouped
        assert regrouped is not None
        for owner, indices in by_owner.items():
            regrouped.batch.gather(self.batch, indices)
            if len(indices) == 1 and regrouped._echo_one(fd, owner, now):
                continue
            regrouped._echo(fd, len(indices), owner, now)

    def _echo_alike(self, fd: int, count: int, owners: list, port_socket: PortReader,
                    now: float) -> bool:
        """A batch of several listeners whose checks and replies are alike (one
        ``batch_profile``, responder.py) and whose every datagram passes them (as the first
        one's: _passing_sources) is served as one listener's is -- one sendmmsg -- with the
        rate limit taken per listener and source, and the counts left to the port socket
        to tally per listener (PortSocket.tally). False, with nothing done, for a batch
        that is not so (then served a listener at a time)."""
        batch = self.batch
        profiles = set(map(_PROFILE, owners))
        if len(profiles) != 1 or None in profiles \
                or PROBE_MAGIC_WORD in batch.first_payload_words[:count]:
            return False
        first = owners[0]
        counts = self._passing_sources(count, first, now)
        if counts is None:
            return False
        drops: Optional[dict[int, str]] = None
        if first.policy.limiter is not None:
            if len(counts) == 1:
                (source,) = counts
                wanted = {(owner, source): n for owner, n in Counter(owners).items()}
            elif self.ipv6:  # (each datagram's key is not at hand: the walk has them)
                return False
            else:
                wanted = Counter(zip(owners, batch.sources[:count]))
            over = over_rate_by_listener(wanted, now)
            if over:
                keys = [source] * count if len(counts) == 1 else batch.sources[:count]
                drops = self._rate_drops(count, owners, keys, over)
        lengths = batch.lengths[:count]
        batch.send_lengths[:count] = lengths
        _, _, failed = self._send_runs(fd, count, drops, first, None, False, owners)
        if drops or failed:
            unsent = {**(drops or {}), **dict.fromkeys(failed or (), "send-error")}
            port_socket.tally([owners[i] for i in range(count) if i not in unsent],
                              [lengths[i] for i in range(count) if i not in unsent],
                              [owners[i] for i in unsent], [lengths[i] for i in unsent])
        else:
            port_socket.tally(owners, lengths)
        return True

    def _rate_drops(self, count: int, owners: list, keys: Sequence[int],
                    over: dict) -> dict[int, str]:
        """The datagrams of *over*'s (listener, source) pairs past what each may pass
        ({pair: how many of its datagrams may}): a pair keeps its first ones, as on the
        walk. Counted (and logged once per listener) as "rate"."""
        drops: dict[int, str] = {}
        dropped: dict[Any, list[int]] = {}
        for index in range(count):
            pair = (owners[index], keys[index])
            left = over.get(pair)
            if left is not None:
                if left > 0:
                    over[pair] = left - 1
                else:
                    drops[index] = "rate"
                    dropped.setdefault(pair[0], []).append(index)
        for owner, indices in dropped.items():
            owner.drop("rate", len(indices), DROP_TEXT["rate"], *self.batch.peer(indices[0])[:2])
        return drops

    # The family's checks (batchpath4.py, batchpath6.py).

    def _passing_sources(self, count: int, responder: EchoSink,
                         now: float) -> Optional[Mapping[int, int]]:
        """{source: its datagrams in the batch} if every one of the *count* datagrams passes
        *responder*'s checks but the rate limit; None if one may not (the walk finds it)."""
        raise NotImplementedError

    def _echo_one(self, fd: int, responder: EchoSink, now: float) -> bool:
        """A lone datagram that passes every check is echoed at once; False leaves it to
        _echo (a refused admit takes no token, so the walk finds it over its rate again)."""
        raise NotImplementedError

    def _echo(self, fd: int, count: int, responder: EchoSink, now: float) -> None:
        """Decide, fix up and send the echoes of the *count* datagrams in the buffers.

        The common case -- every source a real peer (no source port 0, none of this
        host's own addresses) inside 'allow', not held back by the send guard and within
        its rate, every datagram within max_datagram, no probe asking for a trailer -- is
        checked and sent with a few C-level operations on the batch's strided views; only a
        batch with an exception walks its datagrams one by one (_echo_each). The kernel
        never cuts a datagram here (PAYLOAD_STRIDE is above any UDP payload), so MSG_TRUNC
        is looked at only on that walk. A source port below 256 (0 is refused; the others
        are rare) takes the walk too. The checks are the family's (_passing_sources): IPv4
        looks this host's own addresses up (once per distinct source) only while some
        interface has accept_local=1 (policy.py).
        """
        batch = self.batch
        responder.received += count
        responder.received_bytes += sum(batch.lengths[:count])
        counts = self._passing_sources(count, responder, now)
        if counts is not None:
            self._echo_admitted(fd, count, responder, now, counts)
            return
        self._echo_each(fd, count, responder, now, None, rated=False)

    # What both families do once their checks are done.

    def _echo_lone_if_admitted(self, fd: int, responder: EchoSink, length: int, key: Any,
                               now: float) -> bool:
        """The checks both families make of a lone datagram after their own -- allow, an
        unresolved neighbour, then the rate limit (last: an admit takes a token) -- and its
        echo; False leaves it to _echo."""
        policy = responder.policy
        unresolved = self.unresolved
        limiter = policy.limiter
        if ((policy.filters_sources and not policy.admitted_by_acl(key))
                or (unresolved and key in unresolved)  # (group replies: _echo sees)
                or (limiter is not None and limiter.admit(key, 1, now) == 0)):
            return False
        self._echo_lone(fd, responder, length)
        return True

    def _echo_lone(self, fd: int, responder: EchoSink, length: int) -> None:
        """Echo the lone datagram in the buffers, which passed every check (_echo_one)."""
        batch = self.batch
        batch.send_lengths[0] = length
        responder.received += 1
        responder.received_bytes += length
        if responder.listener.reply != "unicast":
            self._send(fd, 1, None, responder)
            return
        sent, code = batch.send(fd, 0, 1)
        if sent:
            responder.echoed += 1
            responder.echoed_bytes += length
        else:
            responder.send_watch.check_at = 0.0  # EAGAIN, ENOBUFS: look at the send queue
            responder.drop("send-error", 1, "echo to %s:%d failed: %s", *batch.peer(0)[:2],
                           errno.errorcode.get(code, code))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("echoed %d bytes to %s:%d", length, *batch.peer(0)[:2])

    def _echo_admitted(self, fd: int, count: int, responder: EchoSink, now: float,
                       counts: Mapping[int, int]) -> None:
        """A batch whose every source passed the family's checks (*counts*: {source key: its
        datagrams}): the rate limit, then one sendmmsg -- or the walk, if a source is over
        its rate or a probe may ask for a trailer."""
        batch = self.batch
        over = over_rate(responder.policy.limiter, counts, now)
        if over is None and PROBE_MAGIC_WORD not in batch.first_payload_words[:count]:
            batch.send_lengths[:count] = batch.lengths[:count]
            self._send(fd, count, None, responder)
            return
        self._echo_each(fd, count, responder, now, over, rated=True)

    def _echo_each(self, fd: int, count: int, responder: EchoSink, now: float,
                   over: Optional[dict[int, int]], rated: bool) -> None:
        """The family's walk of a batch with an exception (it ends in _finish_walk)."""
        raise NotImplementedError

    # The walk.

    def _finish_walk(self, fd: int, count: int, responder: EchoSink, now: float,
                     checked: tuple[dict[int, str], list[int], list[int]],
                     keys: Sequence[int], over: Optional[dict[int, int]],
                     rated: bool) -> None:
        """The walk after a family's own checks (*checked*: the drops so far, the datagrams
        that passed, the probes among them that may ask for a trailer; *keys*: each
        datagram's source as policy.py keys it): the rate limit (already applied to the
        whole batch when *rated*, whose result *over* is), the send guard, the trailers,
        then the sends."""
        drops, passed, asking = checked
        if not rated and passed:
            counts: dict[int, int] = {}
            for i in passed:
                counts[keys[i]] = counts.get(keys[i], 0) + 1
            over = over_rate(responder.policy.limiter, counts, now)
        if over:
            for i in passed:  # a source over its rate keeps its first datagrams of the batch
                left = over.get(keys[i])
                if left is not None:
                    if left > 0:
                        over[keys[i]] = left - 1
                    else:
                        drops[i] = "rate"
        unresolved = self.unresolved
        if unresolved and responder.listener.reply != "group":  # sendguard.py: after the
            for i in passed:  # rate, as on the plain path; a group echo is not held back
                if keys[i] in unresolved and i not in drops:
                    drops[i] = "unresolved"
        stamps = self._trailers(asking, drops, responder, now) if asking else None
        if drops:
            self._log_drops(drops, responder)
        unsent: Optional[dict[int, str]] = drops
        if stamps and HELD in stamps.values():  # echoes held for --spread: not sent now
            unsent = {**drops, **{i: HELD for i, at in stamps.items() if at is HELD}}
        self._send(fd, count, unsent, responder, stamps)


def over_rate_by_listener(wanted: Mapping[tuple[Any, int], int],
                          now: float) -> Optional[dict[tuple[Any, int], int]]:
    """As over_rate, for a batch of several listeners of a port socket: *wanted* is
    {(listener's responder, source key): its datagrams}, each taken from that listener's
    own buckets. None if all may pass, else {pair: how many may} for the pairs over."""
    over = None
    for pair, datagrams in wanted.items():
        allowed = pair[0].policy.limiter.admit(pair[1], datagrams, now)
        if allowed < datagrams:
            if over is None:
                over = {}
            over[pair] = allowed
    return over


def over_rate(limiter: Optional[SourceRateLimiter], counts: Mapping[int, int],
              now: float) -> Optional[dict[int, int]]:
    """Take a batch's datagrams (*counts*: {source key: its datagrams}) from their sources'
    buckets: None if all may pass, else {source: how many of its datagrams in the batch
    may} for the sources over their rate."""
    if limiter is None:
        return None
    over = None
    for source, wanted in counts.items():
        allowed = limiter.admit(source, wanted, now)
        if allowed < wanted:
            if over is None:
                over = {}
            over[source] = allowed
    return over
