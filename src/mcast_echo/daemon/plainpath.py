"""The plain echo path: recvmsg/sendto, one datagram at a time (see echosink.py).

Every family and reply mode, as the fast path (batchpath*.py) serves them: it is the
portable fallback where recvmmsg/sendmmsg cannot load (MCAST_ECHO_ECHO_PATH=plain forces it).
"""

from __future__ import annotations

import logging
import socket
import time

from ..net import mcast
from ..net.ancillary import ARRIVAL_SPACE, ip_arrival
from ..wire import probe
from ..wire.probe import PROBE_MAGIC
from .echosink import (
    DROP_TEXT,
    MSG_TRUNC,
    EchoSink,
    destinations,
    group_address,
    log,
    send_echo,
    send_failed,
)
from .sendguard import SendGuard, source_key

RECV_BUFFER = 65535  # larger than any IPv4 UDP payload: a datagram is never cut unseen
PLAIN_BATCH = 256  # datagrams per wake-up, so signals and timers are seen under a flood


class PlainPath:
    """recvmsg/sendto: IPv4 and IPv6, and every reply mode (unicast, group, both)."""

    name = "plain (recvmsg/sendto)"

    def __init__(self, guard: SendGuard) -> None:
        self.guard = guard
        # the guard's two tables (the same dicts, kept current), indexed by listener.ipv6
        self.unresolved = (guard.unresolved(False), guard.unresolved(True))

    def run(self, sock: socket.socket, responder: EchoSink, now: float) -> int:
        listener = responder.listener
        unresolved = self.unresolved[listener.ipv6]
        watch = responder.send_watch
        verdict = responder.policy.verdict
        recvmsg, sendto = sock.recvmsg, sock.sendto
        max_datagram = listener.max_datagram
        to_sender = listener.reply != "group"
        to_group = listener.reply != "unicast"
        debug = log.isEnabledFor(logging.DEBUG)
        # The counters are kept in locals and stored once, after the loop (nothing in it
        # raises; delayed.py, the only other writer, counts its echoes outside run()).
        received_bytes = echoed_bytes = 0
        echoed = responder.echoed
        check_echoed = watch.check_echoed
        taken = PLAIN_BATCH
        for count in range(PLAIN_BATCH):
            try:
                data, ancdata, flags, source = recvmsg(RECV_BUFFER, ARRIVAL_SPACE)
            except BlockingIOError:
                taken = count
                break
            except OSError as e:  # e.g. a queued ICMP error; the socket stays usable
                responder.drop("recv-error", 1, "receive failed: %s", e)
                taken = count
                break
            size = len(data)
            received_bytes += size
            # ancdata, not the arrival index: verdict reads it only if it needs it (rarely)
            refused = verdict(source, ancdata, now) if not flags & MSG_TRUNC else "truncated"
            if refused is None and size > max_datagram:
                refused = "size"
            if refused is not None:
                _drop(responder, refused, source, size)
                continue
            if unresolved and to_sender and source_key(source[0]) in unresolved:
                _drop(responder, "unresolved", source, size)  # sendguard.py
                continue
            if to_group:  # a group echo leaves by the interface the datagram came in on
                ifindex, ttl = ip_arrival(ancdata)
            received_ns = None  # set: the echo's residence time is stamped at each send
            if data[:4] == PROBE_MAGIC and probe.wants_trailer(data):  # (no call if not)
                ifindex, ttl = ip_arrival(ancdata)  # (again, for a group one: probes are rare)
                # the kernel's receive time of the datagram just read (now, if none)
                kernel_ns = mcast.last_receive_ns(sock.fileno()) or time.time_ns()
                echo = probe.with_trailer(data, responder.arrival(ifindex, ttl, kernel_ns))
                if echo is not data:  # a valid probe
                    spread = probe.spread_of(data)
                    if len(echo) >= probe.RESIDENCE_PROBE:
                        received_ns = kernel_ns
                    data = echo
                    if spread and not (to_group and source[1] == listener.port) \
                            and responder.delayed.hold(
                                spread, sock, responder, data,
                                destinations(listener, source, ifindex), received_ns):
                        continue  # sent when due (delayed.py), and counted then
            if to_sender:
                if received_ns is None:
                    # send_echo(), written out for the common echo: no residence stamp
                    try:
                        sendto(data, source)
                    except OSError as e:
                        send_failed(responder, source, e)
                        continue
                elif not send_echo(sock, data, source, None, responder, received_ns):
                    continue
            if to_group:
                if source[1] == listener.port:  # another responder's echo: never loop
                    responder.drop("loop", 1, DROP_TEXT["loop"], *source[:2])
                    if not to_sender:
                        continue
                elif not send_echo(sock, data, group_address(listener, source, ifindex),
                                   ifindex, responder, received_ns):
                    continue
            echoed += 1
            echoed_bytes += len(data)
            if echoed >= check_echoed:  # a burst (sendguard.py)
                self.guard.look(sock, watch, echoed, listener.ipv6, now)
                check_echoed = watch.check_echoed
            if debug:
                log.debug("echoed %d bytes to %s:%d%s", len(data), *source[:2],
                          " and the group" if to_group else "")
        responder.received += taken
        responder.received_bytes += received_bytes
        responder.echoed = echoed
        responder.echoed_bytes += echoed_bytes
        if now >= watch.check_at:  # a float compare per wake-up (sendguard.py)
            self.guard.check(sock, watch, listener.ipv6, now)
        return taken


def _drop(responder: EchoSink, reason: str, source: tuple, size: int) -> None:
    if reason == "size":
        responder.drop("size", 1, "datagram of %d bytes from %s:%d is above max_datagram "
                       "(%d); dropped", size, *source[:2], responder.listener.max_datagram)
    else:
        responder.drop(reason, 1, DROP_TEXT[reason], *source[:2])
