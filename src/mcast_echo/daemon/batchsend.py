"""The fast path's sending half, for both families (BatchEchoes inherits it): the probes'
trailers (and the echoes held for a probe's --spread), the drops' log lines, and the echoes
themselves -- to the sender, to the group on the sender's port out of the arrival interface
(``reply: group``), or both -- each a sendmmsg over runs of the batch, a failed datagram
skipped and counted as that listener's send-error.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any, Mapping, Optional

from ..net import mmsg
from ..wire import probe
from .echosink import DROP_TEXT, EchoSink, destinations, log

HELD = "held"  # a probe's echo handed to delayed.py for its --spread: not sent with the batch


class BatchSends:
    """What BatchEchoes sends; it owns ``batch`` (mmsg.Batch), ``guard`` and
    ``receive_times``."""

    def _trailers(self, asking: list[int], drops: Optional[dict[int, str]],
                  responder: EchoSink, now: float) -> Optional[dict[int, Any]]:
        """Write the trailer of each probe that asks; {index: kernel receive time} of those
        whose residence time _send stamps, HELD for those handed to delayed.py for their
        --spread (None when there are neither). A probe's receive time is its own, or its
        batch's while its socket's datagrams do not carry theirs (receivetimes.py)."""
        batch = self.batch
        sock = responder.sock
        listener = responder.listener
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
                    peer = batch.peer(i)
                    # (as the plain path: an echo from the group's port is not held, its
                    # group copy is dropped as a loop)
                    if spread and sock is not None and not (
                            listener.reply != "unicast" and peer[1] == listener.port) \
                            and responder.delayed.hold(
                                spread, sock, responder, echo,
                                destinations(listener, peer, ifindex),
                                received_ns if residence else None):
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
                               "above max_datagram (%d); dropped", length, *peer[:2],
                               responder.listener.max_datagram)
            else:
                responder.drop(reason, totals[reason], DROP_TEXT[reason], *peer[:2])

    # The sends.

    def _send(self, fd: int, count: int, drops: Optional[dict[int, str]],
              responder: EchoSink, stamps: Optional[dict[int, Any]] = None) -> None:
        """Send the echoes of the datagrams not in *drops* as the listener's reply mode
        says, and count them (an echo counts once, as on the plain path: when every copy
        it takes went, a group copy not sent as a loop aside).

        *stamps*: {index: kernel receive time} of the probes whose residence time goes in
        their last 8 bytes, stamped with one clock read just before each sendmmsg."""
        reply = responder.listener.reply
        if reply == "unicast":
            echoed, echoed_bytes, _ = self._send_runs(fd, count, drops, responder, stamps,
                                                     False)
        else:
            echoed, echoed_bytes = self._send_to_group(fd, count, drops, responder, stamps,
                                                       reply == "both")
        responder.echoed += echoed
        responder.echoed_bytes += echoed_bytes
        if log.isEnabledFor(logging.DEBUG):
            to = "" if reply == "unicast" else " and the group" if reply == "both" \
                else " (to the group)"
            for i in range(count):
                if not (drops and i in drops):
                    log.debug("echoed %d bytes to %s:%d%s", self.batch.lengths[i],
                              *self.batch.peer(i)[:2], to)

    def _send_to_group(self, fd: int, count: int, drops: Optional[dict[int, str]],
                       responder: EchoSink, stamps: Optional[dict[int, Any]],
                       both: bool) -> tuple[int, int]:
        """The group echoes (after the sender's, for ``both``): (echoes counted, their
        bytes). One from the group's own port is another responder's echo: it never goes
        back to the group (a "loop" drop), which is what keeps responders from echoing
        each other (plainpath.py does the same)."""
        batch = self.batch
        listener = responder.listener
        skip = drops
        if both:
            _, _, failed = self._send_runs(fd, count, drops, responder, stamps, False)
            if failed:
                skip = {**(drops or {}), **dict.fromkeys(failed, "send-error")}
        loops: list[int] = []
        own_port = socket.htons(listener.port)
        if own_port in batch.source_ports[:count]:
            source_ports = batch.source_ports
            loops = [i for i in range(count)
                     if source_ports[i] == own_port and not (skip and i in skip)]
            if loops:
                responder.drop("loop", len(loops), DROP_TEXT["loop"], *batch.peer(loops[0])[:2])
                skip = {**(skip or {}), **dict.fromkeys(loops, "loop")}
        group = self._group_sockaddrs.get(listener.group)
        if group is None:
            group = self._group_sockaddrs[listener.group] = mmsg.group_sockaddr(
                listener.group, self.ipv6)
        batch.aim_at_group(group, count)
        if batch.arrivals_in_place(count):  # out of the interface each came in on
            batch.group_ifindexes[:count] = batch.arrival_ifindexes[:count]
        else:  # their receive time comes first (probes come): each one's cmsgs
            for i in range(count):
                batch.group_ifindexes[i] = batch.ancillary(i)[0] or 0
        echoed, echoed_bytes, _ = self._send_runs(fd, count, skip, responder, stamps, True)
        if both and loops:  # their sender's echo went: counted, as on the plain path
            echoed += len(loops)
            echoed_bytes += sum(batch.lengths[i] for i in loops)
        return echoed, echoed_bytes

    def _send_runs(self, fd: int, count: int, skip: Optional[Mapping[int, str]],
                   responder: EchoSink, stamps: Optional[dict[int, Any]],
                   to_group: bool, owners: Optional[list] = None
                   ) -> tuple[int, int, Optional[list[int]]]:
        """sendmmsg over each run of consecutive echoes not in *skip* (one run when none
        is): (echoes sent, their bytes, the ones that failed or None). A failure is
        *responder*'s, or with *owners* (a port socket's batch) its datagram's listener's."""
        batch = self.batch
        send = batch.send_group if to_group else batch.send
        sent_total = sent_bytes = 0
        failed: Optional[list[int]] = None
        start = 0
        while start < count:
            if skip:
                while start < count and start in skip:
                    start += 1
                end = start
                while end < count and end not in skip:
                    end += 1
            else:
                end = count
            while start < end:
                held = self._stamp(stamps, start, end) if stamps else None
                sent, code = send(fd, start, end - start)
                if held:
                    for residence_ns in held:
                        responder.residence.observe(residence_ns)
                sent_total += sent
                sent_bytes += sum(batch.lengths[start:start + sent])
                start += sent
                if code or not sent:  # not sent without an errno: never seen; do not spin
                    code = code or errno.EIO  # ENOBUFS, EAGAIN, ECONNREFUSED, EPERM: skip it
                    failing = owners[start] if owners else responder
                    failing.send_watch.check_at = 0.0  # look at the send queue (sendguard.py)
                    peer = batch.peer(start)
                    to = (failing.listener.group, peer[1]) if to_group else peer[:2]
                    failing.drop("send-error", 1, "echo to %s:%d failed: %s", *to,
                                   errno.errorcode.get(code, code))
                    failed = failed if failed is not None else []
                    failed.append(start)
                    start += 1
        return sent_total, sent_bytes, failed
