"""The plain echo path: recvmsg/sendto, one datagram at a time (see echosink.py).

Every family and reply mode, as the fast path (batchpath*.py) serves them, on a socket of
one listener's or on a port's shared one (sharedsocket.py): it is the portable fallback
where recvmmsg/sendmmsg cannot load (MCAST_ECHO_ECHO_PATH=plain forces it).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Optional

from ..net import mcast
from ..net.ancillary import ARRIVAL_SPACE, destination_key, ip_arrival, ip_destination
from ..wire import probe
from ..wire.probe import PROBE_MAGIC
from .echosink import (
    DROP_TEXT,
    MSG_TRUNC,
    EchoSink,
    PortReader,
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
        """Echo what is queued on *responder*'s own socket, up to PLAIN_BATCH datagrams."""
        return self._serve(sock, responder, None, now)

    def run_shared(self, port_socket: PortReader, now: float) -> int:
        """Echo what is queued on a port socket (sharedsocket.py): each datagram as the
        listener of the group its pktinfo names; a stray (to none of them) is dropped."""
        return self._serve(port_socket.sock, port_socket, port_socket.by_group, now)

    def _serve(self, sock: socket.socket, owner: Any, by_group: Optional[dict],
               now: float) -> int:
        """Up to PLAIN_BATCH datagrams off *sock*, whose *owner* (a responder, or a port
        socket with its *by_group*) keeps the send guard's watch."""
        watch = owner.send_watch
        ipv6 = owner.ipv6 if by_group is not None else owner.listener.ipv6
        recvmsg = sock.recvmsg
        taken = PLAIN_BATCH
        for count in range(PLAIN_BATCH):
            try:
                data, ancdata, flags, source = recvmsg(RECV_BUFFER, ARRIVAL_SPACE)
            except BlockingIOError:
                taken = count
                break
            except OSError as e:  # e.g. a queued ICMP error; the socket stays usable
                owner.drop("recv-error", 1, "receive failed: %s", e)
                taken = count
                break
            if by_group is None:
                self._echo(sock, owner, data, ancdata, flags, source, now)
            else:
                owner.echoed += 1  # (what the send guard's burst look counts)
                packed = ip_destination(ancdata)
                responder = by_group.get(destination_key(packed)) if packed else None
                if responder is None:
                    owner.stray(1, source)
                    continue
                self._echo(sock, responder, data, ancdata, flags, source, now)
            if owner.echoed >= watch.check_echoed:  # a burst (sendguard.py)
                self.guard.look(sock, watch, owner.echoed, ipv6, now)
        if now >= watch.check_at:  # a float compare per wake-up (sendguard.py)
            self.guard.check(sock, watch, ipv6, now)
        return taken

    def _echo(self, sock: socket.socket, responder: EchoSink, data: bytes, ancdata: list,
              flags: int, source: tuple, now: float) -> None:
        """The echo of one datagram received for *responder*, counted."""
        listener = responder.listener
        to_sender = listener.reply != "group"
        to_group = listener.reply != "unicast"
        size = len(data)
        responder.received += 1
        responder.received_bytes += size
        # ancdata, not the arrival index: verdict reads it only if it needs it (rarely)
        refused = responder.policy.verdict(source, ancdata, now) \
            if not flags & MSG_TRUNC else "truncated"
        if refused is None and size > listener.max_datagram:
            refused = "size"
        if refused is not None:
            _drop(responder, refused, source, size)
            return
        unresolved = self.unresolved[listener.ipv6]
        if unresolved and to_sender and source_key(source[0]) in unresolved:
            _drop(responder, "unresolved", source, size)  # sendguard.py
            return
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
                    return  # sent when due (delayed.py), and counted then
        if to_sender:
            if received_ns is None:
                # send_echo(), written out for the common echo: no residence stamp
                try:
                    sock.sendto(data, source)
                except OSError as e:
                    send_failed(responder, source, e)
                    return
            elif not send_echo(sock, data, source, None, responder, received_ns):
                return
        if to_group:
            if source[1] == listener.port:  # another responder's echo: never loop
                responder.drop("loop", 1, DROP_TEXT["loop"], *source[:2])
                if not to_sender:
                    return
            elif not send_echo(sock, data, group_address(listener, source, ifindex),
                               ifindex, responder, received_ns):
                return
        responder.echoed += 1
        responder.echoed_bytes += len(data)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("echoed %d bytes to %s:%d%s", len(data), *source[:2],
                      " and the group" if to_group else "")


def _drop(responder: EchoSink, reason: str, source: tuple, size: int) -> None:
    if reason == "size":
        responder.drop("size", 1, "datagram of %d bytes from %s:%d is above max_datagram "
                       "(%d); dropped", size, *source[:2], responder.listener.max_datagram)
    else:
        responder.drop(reason, 1, DROP_TEXT[reason], *source[:2])
