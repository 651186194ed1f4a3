"""The multicast ping listener: answers ssmping/asmping (legacy) and RFC 6450 clients.

``ssmping: {port: 4321}`` turns it on. One IPv4 and one IPv6 socket, bound to the
wildcard address and the port, join no group: requests are unicast. Each request is
checked by the same policy as the echo listeners (a real peer, not forged with one of
this host's own addresses, ``allow``, the per-source rate limit), answered by
``wire.mping.answer`` (at most two replies, one to the client and one to a configured
group, each at most ``wire.mping.MAX_GROWTH`` = 89 bytes larger than the request), and
each reply is sent with the request's
destination address as its source (IP_PKTINFO / IPV6_PKTINFO): an SSM client joins
(S,G) with S = the address it pinged, so a reply from any other address is filtered
by its kernel. Replies go to the client's source port, unicast and to a configured
group, with TTL / hop limit 64 (what RFC 6450's TTL option announces and ssmping's
``dist=`` is computed from). See docs/ssmping.md.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import time
from collections import Counter

from .. import __version__
from ..net import mcast
from ..net.ancillary import (
    ARRIVAL_SPACE,
    IP_PKTINFO,
    IPV6_RECVPKTINFO,
    Received,
    source_pktinfo,
)
from ..schema.endpoints import Ssmping
from ..wire import mping
from ..wire.tlv import Responder
from .policy import Policy
from .ratelimit import RateLimitedLog
from .sendguard import SendGuard, SendWatch, source_key

log = logging.getLogger(__name__)

TTL = 64
RECV_BUFFER = 65535
BATCH = 16  # requests per wake-up per socket: the costliest (an Init of 62 prefixes, ~0.3 ms)
#            keep one wake-up to a few ms, then the echo sockets get their turn
SESSION_KEY = os.urandom(16)  # RFC 6450 Session IDs: one key per process, kept across reloads


class MpingSocket:
    """One family's socket of the listener: what the daemon's poller hands the wake-up to."""

    def __init__(self, listener: MpingListener, sock: socket.socket, ipv6: bool) -> None:
        self.listener = listener
        self.sock = sock
        self.ipv6 = ipv6
        self.send_watch = SendWatch()  # the send guard's state for the socket (sendguard.py)

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self, now: float) -> None:
        self.listener.serve(self, now)


class MpingListener:
    def __init__(self, settings: Ssmping, drop_log: RateLimitedLog,
                 guard: SendGuard) -> None:
        self.settings = settings
        self.drop_log = drop_log
        self.guard = guard  # the echo paths' one, from the daemon
        self.sockets: list[MpingSocket] = []
        self.counts: Counter[str] = Counter()
        self.responder = Responder(tuple(ipaddress.ip_address(g) for g in settings.groups),
                                   TTL, f"mcast-echo {__version__}", SESSION_KEY)
        self.policies = {ipv6: Policy(ipv6, settings.allow, settings.rate_limit)
                         for ipv6 in (False, True)}

    # ---------------------------------------------------------------- set-up

    def open(self) -> None:
        """Bind the IPv4 socket, and the IPv6 one where this host has IPv6."""
        try:
            self.sockets.append(MpingSocket(self, _open(socket.AF_INET, self.settings.port),
                                            False))
            try:
                self.sockets.append(MpingSocket(self, _open(socket.AF_INET6,
                                                            self.settings.port), True))
            except OSError as e:
                if e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    raise
                log.warning("ssmping: no IPv6 (%s): IPv4 only", e.strerror)
        except OSError as e:
            self.close()
            raise OSError(e.errno, f"cannot bind the ssmping port {self.settings.port}: "
                                   f"{e.strerror or e}") from None
        log.info("ssmping: answering ssmping, asmping and RFC 6450 clients on port %d "
                 "(groups %s)", self.settings.port, ", ".join(self.settings.groups))

    def reconfigure(self, settings: Ssmping) -> None:
        """Same port: new groups, allow and rate limit in place (the session key stays)."""
        assert settings.port == self.settings.port
        fresh = MpingListener(settings, self.drop_log, self.guard)
        self.settings, self.responder, self.policies = settings, fresh.responder, fresh.policies

    def close(self) -> None:
        for handler in self.sockets:
            handler.sock.close()
        self.sockets = []

    # ---------------------------------------------------------------- answering

    def serve(self, handler: MpingSocket, now: float) -> None:
        """Answer up to BATCH requests queued on one socket, the loop having woken at *now*
        (monotonic); nothing a peer sends raises. A client whose address does not resolve
        is not answered by unicast (sendguard.py)."""
        self._serve(handler, now)
        if now >= handler.send_watch.check_at:
            self.guard.check(handler.sock, handler.send_watch, handler.ipv6, now)

    def _serve(self, handler: MpingSocket, now: float) -> None:
        sock, ipv6 = handler.sock, handler.ipv6
        policy = self.policies[ipv6]
        counts = self.counts
        unresolved = self.guard.unresolved(ipv6)
        for _ in range(BATCH):
            try:
                data, ancdata, _flags, source = sock.recvmsg(RECV_BUFFER, ARRIVAL_SPACE)
            except BlockingIOError:
                return
            except OSError as e:
                self._drop("recv-error", "ssmping: receive failed: %s", e)
                return
            counts["received"] += 1
            received = Received(ancdata)
            refused = policy.verdict(source, received.ifindex, now)
            if refused is not None:
                self._drop(refused, "ssmping: request from %s:%d dropped (%s)", *source[:2],
                           refused)
                continue
            answer = mping.answer(data, source[0], time.time_ns(), self.responder)
            if answer.malformed:
                counts["malformed"] += 1
                continue
            if not answer.dialect:
                counts["ignored"] += 1
                continue
            counts[answer.dialect] += 1
            # each reply leaves from the address the request was sent to, the interface
            # left to routing (ifindex 0, as ssmpingd does)
            from_destination = (source_pktinfo(received.destination)
                                if received.destination is not None else [])
            for reply in answer.replies:
                if reply.group is None and unresolved and source_key(source[0]) in unresolved:
                    self._drop("unresolved", "ssmping: reply to %s:%d held back: the address "
                               "does not resolve (ARP/ND)", *source[:2])
                    continue
                address = source if reply.group is None else (
                    (str(reply.group), source[1], 0, source[3]) if ipv6
                    else (str(reply.group), source[1]))
                try:
                    sock.sendmsg([reply.payload], from_destination, 0, address)
                except OSError as e:
                    handler.send_watch.check_at = 0.0  # EAGAIN, ENOBUFS: look at the queue
                    self._drop("send-error", "ssmping: reply to %s:%d failed: %s",
                               *address[:2], errno.errorcode.get(e.errno or 0, e))
                    continue
                counts["replies to groups" if reply.group is not None else "replies"] += 1
                if counts["replies"] >= handler.send_watch.check_echoed:  # a burst
                    self.guard.look(sock, handler.send_watch, counts["replies"], ipv6, now)

    def _drop(self, reason: str, message: str, *args: object) -> None:
        self.counts[f"dropped {reason}"] += 1
        self.drop_log.log(f"ssmping-{reason}", logging.WARNING, message, *args)

    def status(self) -> str:
        counts = self.counts
        text = (f"ssmping :{self.settings.port}: requests {counts['ssmping'] + counts['rfc6450']}"
                f" (ssmping {counts['ssmping']}, rfc6450 {counts['rfc6450']}), replies "
                f"{counts['replies']} unicast + {counts['replies to groups']} to groups")
        dropped = {k[8:]: v for k, v in counts.items() if k.startswith("dropped ") and v}
        other = {k: counts[k] for k in ("malformed", "ignored") if counts[k]}
        if dropped or other:
            text += ", " + ", ".join(f"{k} {v}" for k, v in sorted({**other, **dropped}.items()))
        return text


def _open(family: int, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
            sock.bind(("::", port))
        else:
            sock.setsockopt(socket.IPPROTO_IP, mcast.IP_MULTICAST_ALL, 0)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
            sock.bind(("0.0.0.0", port))
        mcast.set_hops(sock, family == socket.AF_INET6, TTL, True)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
