"""The echo itself: a batch of datagrams in, their echoes out, and counts of what was dropped.

Two paths with one contract, ``run(sock, responder, now) -> int`` (datagrams taken
off the socket; 0 when its queue is empty):

- BatchPath: recvmmsg/sendmmsg through ctypes (mmsg.py), 64 datagrams per system
  call, per-datagram work on integers read from preallocated buffers. When every
  datagram of a batch is admitted, the echoes go out in one sendmmsg.
- PlainPath: recvmsg/sendto, one datagram at a time: the portable fallback, and
  the reference the tests run against too (MCAST_ECHO_ECHO_PATH=plain).

Both apply the same rules in the same order: a source that cannot be a real peer,
then 'allow', then a datagram the kernel cut or that is over max_datagram, then the
rate limit; then a probe that asks gets its identity trailer (probe.py), never
making the echo larger. Nothing a peer sends can raise out of here.

The responder supplies the policy, max_datagram, counters and the drop log (see
GroupResponder: ``received``, ``echoed``, ``drop()``, ``arrival()``).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Optional, Union

from . import mmsg, probe

if TYPE_CHECKING:
    from .responder import GroupResponder

log = logging.getLogger("mcast_echo.responder")

RECV_BUFFER = 65535  # larger than any IPv4 UDP payload: a datagram is never cut unseen
ANCILLARY_SPACE = socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4)  # in_pktinfo + TTL
PLAIN_BATCH = 256  # datagrams per wake-up, so signals and timers are seen under a flood
FAST_BATCH = 64  # datagrams per recvmmsg
FAST_ROUNDS = 4  # recvmmsg calls per wake-up: 256 datagrams, as the plain path
MSG_TRUNC = int(socket.MSG_TRUNC)  # an int: `flags & socket.MSG_TRUNC` runs enum code
PROBE_MAGIC_WORD = struct.unpack("=I", probe.PROBE_MAGIC)[0]
ENV = "MCAST_ECHO_ECHO_PATH"
CHOICES = ("auto", "fast", "plain")

DROP_TEXT = {
    "source": "datagram from %s:%d dropped: source cannot be a real peer (0.0.0.0/8, "
              "127.0.0.0/8 off lo, multicast, broadcast)",
    "acl": "datagram from %s:%d dropped: source not in 'allow'",
    "rate": "datagram from %s:%d dropped: source over its 'rate_limit'",
    "truncated": "datagram from %s:%d cut by the kernel; dropped",
}


class PlainPath:
    name = "plain (recvmsg/sendto)"

    def run(self, sock: socket.socket, responder: GroupResponder, now: float) -> int:
        policy = responder.policy
        verdict = policy.verdict
        max_datagram = responder.listener.max_datagram
        debug = log.isEnabledFor(logging.DEBUG)
        for count in range(PLAIN_BATCH):
            try:
                data, ancdata, flags, source = sock.recvmsg(RECV_BUFFER, ANCILLARY_SPACE)
            except BlockingIOError:
                return count
            except OSError as e:  # e.g. a queued ICMP error; the socket stays usable
                responder.drop("recv-error", 1, "receive failed: %s", e)
                return count
            responder.received += 1
            refused = verdict(source[0], now) if not flags & MSG_TRUNC else "truncated"
            if refused is None and len(data) > max_datagram:
                refused = "size"
            if refused is not None:
                _drop(responder, refused, source, len(data))
                continue
            if probe.wants_trailer(data):
                data = probe.with_trailer(data, responder.arrival(*_ancillary(ancdata)))
            try:
                sock.sendto(data, source)
            except OSError as e:  # ENOBUFS, EAGAIN, ECONNREFUSED, EPERM: count, go on
                responder.drop("send-error", 1, "echo to %s:%d failed: %s", *source,
                               errno.errorcode.get(e.errno or 0, e))
                continue
            responder.echoed += 1
            if debug:
                log.debug("echoed %d bytes to %s:%d", len(data), *source)
        return PLAIN_BATCH


def _drop(responder: GroupResponder, reason: str, source: tuple, size: int) -> None:
    if reason == "size":
        responder.drop("size", 1, "datagram of %d bytes from %s:%d is above max_datagram "
                       "(%d); dropped", size, *source, responder.listener.max_datagram)
    else:
        responder.drop(reason, 1, DROP_TEXT[reason], *source)


def _ancillary(ancdata: list) -> tuple[Optional[int], Optional[int]]:
    ifindex = ttl = None
    for level, kind, payload in ancdata:
        if level == socket.IPPROTO_IP and len(payload) >= 4:
            if kind == mmsg.IP_PKTINFO:
                ifindex = struct.unpack_from("=i", payload)[0]
            elif kind == socket.IP_TTL:
                ttl = struct.unpack_from("=i", payload)[0]
    return ifindex, ttl


class BatchPath:
    name = f"fast (recvmmsg/sendmmsg, {FAST_BATCH} per call)"

    def __init__(self) -> None:
        self.batch = mmsg.Batch(FAST_BATCH)

    def run(self, sock: socket.socket, responder: GroupResponder, now: float) -> int:
        fd = sock.fileno()
        taken = 0
        for _ in range(FAST_ROUNDS):
            try:
                count = self.batch.receive(fd)
            except OSError as e:  # e.g. a queued ICMP error; the socket stays usable
                responder.drop("recv-error", 1, "receive failed: %s", e)
                return taken
            if count == 0:
                return taken
            taken += count
            self._echo(fd, count, responder, now)
            if count < FAST_BATCH:
                return taken
        return taken

    def _echo(self, fd: int, count: int, responder: GroupResponder, now: float) -> None:
        """Decide, fix up and send the echoes of the *count* datagrams in the buffers."""
        batch = self.batch
        words, name_bytes, name_words = batch.words, batch.name_bytes, batch.name_words
        payload_words, send_lengths = batch.payload_words, batch.send_lengths
        hdr_words, len_word, flags_word = mmsg.HDR_WORDS, mmsg.LEN_WORD, mmsg.FLAGS_WORD
        name_size, addr_word = mmsg.NAME_SIZE, mmsg.NAME_SIZE // 4
        stride_words = mmsg.PAYLOAD_STRIDE // 4
        iov_words = mmsg.IOV_WORDS
        policy = responder.policy
        refused_octets, networks, limiter = (policy.refused_octets, policy.networks,
                                             policy.limiter)
        admitted_by_acl = policy.admitted_by_acl
        max_datagram = responder.listener.max_datagram
        min_probe = probe.MIN_TRAILER_PROBE
        drops: Optional[dict[int, str]] = None
        per_source: Optional[dict[int, int]] = {} if limiter is not None else None
        asking: Optional[list[int]] = None
        for i in range(count):
            header = i * hdr_words
            length = words[header + len_word]
            if name_bytes[i * name_size + 4] in refused_octets:
                reason = "source"
            elif networks is not None and not admitted_by_acl(name_words[i * addr_word + 1]):
                reason = "acl"
            elif words[header + flags_word] & MSG_TRUNC:
                reason = "truncated"
            elif length > max_datagram:
                reason = "size"
            else:
                send_lengths[i * iov_words + 1] = length
                if per_source is not None:
                    source = name_words[i * addr_word + 1]
                    per_source[source] = per_source.get(source, 0) + 1
                if length >= min_probe and payload_words[i * stride_words] == PROBE_MAGIC_WORD:
                    if asking is None:
                        asking = []
                    asking.append(i)
                continue
            if drops is None:
                drops = {}
            drops[i] = reason
        responder.received += count
        if per_source:
            drops = self._rate_limit(per_source, count, drops, now, limiter)
        if asking:
            self._trailers(asking, drops, responder)
        if drops:
            self._log_drops(drops, responder)
        self._send(fd, count, drops, responder)

    def _rate_limit(self, per_source: dict[int, int], count: int,
                    drops: Optional[dict[int, str]], now: float,
                    limiter) -> Optional[dict[int, str]]:
        """One bucket look-up per source per batch; a source over its rate keeps its first
        datagrams of the batch and loses the rest."""
        over: Optional[dict[int, int]] = None
        for source, wanted in per_source.items():
            allowed = limiter.admit(source, wanted, now)
            if allowed < wanted:
                if over is None:
                    over = {}
                over[source] = allowed
        if over is None:
            return drops
        drops = drops if drops is not None else {}
        name_words, addr_word = self.batch.name_words, mmsg.NAME_SIZE // 4
        for i in range(count):
            source = name_words[i * addr_word + 1]
            if source in over and i not in drops:
                if over[source] > 0:
                    over[source] -= 1
                else:
                    drops[i] = "rate"
        return drops

    def _trailers(self, asking: list[int], drops: Optional[dict[int, str]],
                  responder: GroupResponder) -> None:
        batch = self.batch
        for i in asking:
            if drops and i in drops:
                continue
            length = batch.words[i * mmsg.HDR_WORDS + mmsg.LEN_WORD]
            data = batch.payload(i, length)
            if probe.wants_trailer(data):
                echo = probe.with_trailer(data, responder.arrival(*batch.ancillary(i)))
                if echo is not data and len(echo) == length:
                    batch.set_payload(i, echo)

    def _log_drops(self, drops: dict[int, str], responder: GroupResponder) -> None:
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
                length = batch.words[i * mmsg.HDR_WORDS + mmsg.LEN_WORD]
                responder.drop("size", totals[reason], "datagram of %d bytes from %s:%d is "
                               "above max_datagram (%d); dropped", length, *peer,
                               responder.listener.max_datagram)
            else:
                responder.drop(reason, totals[reason], DROP_TEXT[reason], *peer)

    def _send(self, fd: int, count: int, drops: Optional[dict[int, str]],
              responder: GroupResponder) -> None:
        """sendmmsg over each run of consecutive admitted echoes (one run when none dropped)."""
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
                sent, code = self.batch.send(fd, start, end - start)
                responder.echoed += sent
                start += sent
                if code or not sent:  # not sent without an errno: never seen; do not spin
                    code = code or errno.EIO  # ENOBUFS, EAGAIN, ECONNREFUSED, EPERM: skip it
                    responder.drop("send-error", 1, "echo to %s:%d failed: %s",
                                   *self.batch.peer(start), errno.errorcode.get(code, code))
                    start += 1
        if log.isEnabledFor(logging.DEBUG):
            for i in range(count):
                if not (drops and i in drops):
                    log.debug("echoed %d bytes to %s:%d",
                              self.batch.words[i * mmsg.HDR_WORDS + mmsg.LEN_WORD],
                              *self.batch.peer(i))


EchoPath = Union[PlainPath, BatchPath]


def choose(preference: Optional[str] = None) -> EchoPath:
    """The echo path: *preference* or $MCAST_ECHO_ECHO_PATH (auto, fast, plain).

    auto takes the fast path where recvmmsg/sendmmsg load; fast insists (OSError if
    it cannot load); plain is the portable loop. The daemon makes one and shares it
    among its responders: it runs one batch at a time, so one set of buffers serves all.
    """
    wanted = (preference or os.environ.get(ENV) or "auto").strip().lower()
    if wanted not in CHOICES:
        log.warning("%s=%r is not one of %s; using auto", ENV, wanted[:20], ", ".join(CHOICES))
        wanted = "auto"
    if wanted == "plain" or (wanted == "auto" and not mmsg.load()):
        return PlainPath()
    return BatchPath()
