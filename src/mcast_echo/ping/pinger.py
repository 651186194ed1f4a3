"""The probing socket and the send/receive loop of `mcast-echo ping`.

``open_socket`` turns ``Settings`` into one UDP socket (multicast TTL, loopback,
outgoing interface, receive TTL and kernel timestamps); ``Pinger`` sends a probe
every interval and matches every echo to this run's probes until the count and
the wait are done or Ctrl-C. Errors a user can act on become ``PingError``.
"""

from __future__ import annotations

import array
import errno
import ipaddress
import json
import secrets
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Optional, TextIO

from ..net import ifaddr
from ..net.mcast import IP_RECVTTL, ROUTE_FIX
from ..wire import probe
from . import report as pingreport

MAX_CATCH_UP = 0.05  # seconds of missed sends made up at once; longer stalls are not
RECEIVE_BATCH = 256  # echoes read per wakeup before the loop looks at the clock again
WANTED_RCVBUF = 4 << 20  # echoes from many responders at once; the kernel caps it at rmem_max

# Linux values that Python's socket module does not export.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_ANCILLARY_SPACE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)  # a timespec, an int TTL

# errno of a failed setsockopt or send -> what to tell the user; one table so they cannot drift.
_ERRNO_ADVICE = {
    errno.ENETUNREACH: f"no route to {{group}}: {ROUTE_FIX} or pass -I IFACE",
    errno.ENODEV: "no usable interface for {group}{via}: it is missing or down; "
                  "pass -I with an interface that is up, or add a multicast route",
    errno.EADDRNOTAVAIL: "-I {interface} is not an IPv4 address of this host: "
                         "pass one of its addresses or an interface name",
    errno.EPERM: "sending to {group} was refused: is a firewall rule dropping it?",
    errno.EACCES: "sending to {group} was refused: is a firewall rule dropping it?",
    errno.EMSGSIZE: "{size}-byte probes are too large for this path: lower -s",
    errno.EHOSTUNREACH: "{group} is unreachable{via}: check the interface and its routes",
}
# Send errors worth counting and carrying on after (a full queue, a stray ICMP error).
_TRANSIENT_SEND = {errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED, errno.EINTR}


class PingError(Exception):
    """A usage or network problem; the message says what to do. Exit status 2."""


@dataclass(frozen=True)
class Settings:
    group: str
    port: int
    interface: Optional[str]  # a name, an IPv4 address, or None: the route to the group
    count: Optional[int]  # None: until Ctrl-C
    interval: float
    size: int
    ttl: int
    loopback: bool
    wait: float
    expect: int
    quiet: bool
    json: bool
    config: Optional[str]  # the file defaults came from, if any

    @property
    def target(self) -> str:
        return f"{self.group}:{self.port}"


# --- the socket --------------------------------------------------------------------------------

def explain(err: OSError, settings: Settings) -> str:
    template = _ERRNO_ADVICE.get(err.errno or 0)
    name = errno.errorcode.get(err.errno or 0, "error")
    if template is None:
        return f"{settings.target}: {err.strerror or err} ({name})"
    via = f" via {settings.interface}" if settings.interface else ""
    return template.format(group=settings.group, interface=settings.interface, via=via,
                           size=settings.size) + f" ({name})"


def _multicast_if(sock: socket.socket, interface: str) -> tuple[bytes, str]:
    """The ip_mreqn for IP_MULTICAST_IF, and how to name the choice in the banner.

    For a name, the interface's own address goes in too: it becomes the source
    address, which on lo is what keeps the source from being 0.0.0.0.
    """
    any_addr = socket.inet_aton("0.0.0.0")
    try:
        address = ipaddress.IPv4Address(interface)
        return struct.pack("4s4si", any_addr, address.packed, 0), str(address)
    except ValueError:
        pass
    try:
        index = socket.if_nametoindex(interface)
    except OSError:
        raise PingError(f"-I {interface}: no such interface "
                        "(list them with `ip -brief address`)") from None
    source = ifaddr.primary_address(sock, interface)
    mreqn = struct.pack("4s4si", any_addr, socket.inet_aton(source or "0.0.0.0"), index)
    return mreqn, f"{interface} ({source})" if source else interface


def open_socket(settings: Settings) -> tuple[socket.socket, str]:
    """The probing socket (blocking sends; receives use MSG_DONTWAIT) and the interface text."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        via = ""
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, settings.ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(settings.loopback))
        if settings.interface:
            mreqn, via = _multicast_if(sock, settings.interface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, WANTED_RCVBUF)
        sock.bind(("0.0.0.0", 0))
    except OSError as err:
        sock.close()
        raise PingError(explain(err, settings)) from None
    except BaseException:
        sock.close()
        raise
    return sock, via


def _ancillary(ancdata: list[tuple[int, int, bytes]]) -> tuple[Optional[int], Optional[int]]:
    """(kernel receive time in ns, IP TTL) from recvmsg's ancillary data."""
    rx_ns = ttl = None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack_from("@qq", data)
            rx_ns = seconds * 1_000_000_000 + nanoseconds
        elif level == socket.IPPROTO_IP and kind == socket.IP_TTL and len(data) >= 4:
            (ttl,) = struct.unpack_from("@i", data)
    return rx_ns, ttl


# --- the run -----------------------------------------------------------------------------------

class Interrupts:
    """Ctrl-C only records the request; the wakeup fd wakes the loop, which then stops."""

    def __init__(self) -> None:
        self.requested = False
        self.wakeup: Optional[socket.socket] = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals go to the main thread only; nothing to arrange
        self.wakeup, self._writer = socket.socketpair()
        for end in (self.wakeup, self._writer):
            end.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno())
        self._old_handler = signal.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum: int, frame: object) -> None:
        self.requested = True

    def drain(self) -> None:
        try:
            while self.wakeup is not None and self.wakeup.recv(64):
                pass
        except BlockingIOError:
            pass

    def __exit__(self, *exc: object) -> None:
        if self.wakeup is not None:
            signal.signal(signal.SIGINT, self._old_handler)
            signal.set_wakeup_fd(self._old_fd)
            self.wakeup.close()
            self._writer.close()


class SendTimes:
    """When we sent each of the last SEQ_WINDOW probes, by our own clock.

    RTTs are the kernel's receive time minus this: the send time in an echo's header
    is whatever the peer wrote there. A fixed ring, so a long run costs nothing more.
    """

    def __init__(self, window: int = pingreport.SEQ_WINDOW) -> None:
        self._sent_ns = array.array("q", bytes(8 * window))  # 0: the send failed
        self.next_seq = 0

    def record(self, sent_ns: int) -> int:
        """Store the send time of the next probe (0 if it was not sent); returns its seq."""
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        self._sent_ns[seq % len(self._sent_ns)] = sent_ns
        return seq

    def lookup(self, seq: int) -> Optional[int]:
        """The send time of *seq*, None if we did not send it or it left the window."""
        if not self.next_seq - len(self._sent_ns) <= seq < self.next_seq:
            return None
        return self._sent_ns[seq % len(self._sent_ns)] or None

    def too_old(self, seq: int) -> bool:
        return seq < self.next_seq - len(self._sent_ns)


class Pinger:
    """One run: sends the probes, matches the echoes, keeps the per-responder stats."""

    def __init__(self, settings: Settings, sock: socket.socket, via: str, out: TextIO) -> None:
        self.settings = settings
        self.sock = sock
        self.via = via
        self.out = out
        self.session = secrets.randbits(32)
        self.responders = pingreport.ResponderTable(settings.port)
        self.counts = pingreport.RunCounts()
        self.send_times = SendTimes()
        self._reported_errnos: set[int] = set()

    def _say(self, line: str) -> None:
        if not (self.settings.quiet or self.settings.json):
            print(line, file=self.out, flush=True)

    @property
    def next_seq(self) -> int:
        return self.send_times.next_seq

    def send(self) -> None:
        seq = self.next_seq
        sent_ns = time.time_ns()  # the realtime clock, as the kernel's receive timestamps
        datagram = probe.build_probe(self.session, seq, sent_ns, self.settings.size,
                                     sent_ttl=self.settings.ttl)
        try:
            self.sock.sendto(datagram, (self.settings.group, self.settings.port))
        except OSError as err:
            self.send_times.record(0)
            if self.counts.transmitted == 0 and err.errno not in _TRANSIENT_SEND:
                raise PingError(explain(err, self.settings)) from None
            self.counts.send_errors += 1
            if err.errno not in self._reported_errnos:  # once per errno, not per probe
                self._reported_errnos.add(err.errno or 0)
                print(f"mcast-echo ping: seq={seq}: {explain(err, self.settings)}",
                      file=sys.stderr, flush=True)
            return
        self.send_times.record(sent_ns)
        self.counts.transmitted += 1

    def receive(self) -> None:
        """Read the echoes that are waiting (a batch at most, so sending keeps its pace)."""
        for _ in range(RECEIVE_BATCH):
            try:
                data, ancdata, _flags, source = self.sock.recvmsg(
                    probe.MAX_UDP_PAYLOAD + 1, _ANCILLARY_SPACE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued on the socket; the probe counts as lost
                return
            rx_ns, reply_ttl = _ancillary(ancdata)
            rx_ns = rx_ns or time.time_ns()
            echo = probe.check_echo(data, self.session)
            sent_ns = self._send_time(echo)
            if echo is None or sent_ns is None:
                continue
            stats = self.responders.lookup(source[0], source[1])
            if stats is None:
                self._table_full_notice()
                continue
            rtt_ns = max(0, rx_ns - sent_ns)  # a clock step back must not show as negative
            fresh = stats.record(echo, rtt_ns, reply_ttl, self.settings.ttl)
            self._say(pingreport.reply_line(stats, echo, len(data), rtt_ns, fresh))

    def _send_time(self, echo: Optional[probe.Echo]) -> Optional[int]:
        """Our send time of the probe *echo* answers; None (and counted) when there is none."""
        sent_ns = self.send_times.lookup(echo.header.seq) if echo is not None else None
        if sent_ns is None:
            if echo is not None and self.send_times.too_old(echo.header.seq):
                self.counts.late += 1
            else:
                self.counts.stray += 1  # no echo of a probe this run sent
        return sent_ns

    def _table_full_notice(self) -> None:
        if self.responders.untracked_echoes == 1:  # once per run: a peer can trigger it
            print(f"mcast-echo ping: more than {self.responders.limit} responders: echoes "
                  "from further sources are counted, not shown", file=sys.stderr, flush=True)

    def loop(self, interrupts: Interrupts) -> None:
        settings = self.settings
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            if interrupts.wakeup is not None:
                selector.register(interrupts.wakeup, selectors.EVENT_READ)
            next_send = time.monotonic()
            end_at: Optional[float] = None
            while not interrupts.requested:
                now = time.monotonic()
                if end_at is None and now >= next_send:
                    self.send()
                    if self.next_seq == 1 and not settings.json:  # after the first send,
                        print(self.banner(), file=self.out, flush=True)  # so errors come alone
                    # Keep the average rate even when a wakeup comes late (epoll counts
                    # whole ms), but after a real stall start afresh instead of bursting.
                    next_send += settings.interval
                    if next_send < now - MAX_CATCH_UP:
                        next_send = now
                    if settings.count is not None and self.next_seq >= settings.count:
                        end_at = now + settings.wait
                if end_at is not None and now >= end_at:
                    return
                deadline = end_at if end_at is not None else next_send
                for key, _events in selector.select(max(0.0, deadline - time.monotonic())):
                    if key.fileobj is self.sock:
                        self.receive()
                    else:
                        interrupts.drain()

    def banner(self) -> str:
        s, via = self.settings, self.via
        line = (f"MCAST-ECHO PING {s.target}{' via ' + via if via else ''}: {s.size}-byte probes, "
                f"ttl {s.ttl}, loopback {'on' if s.loopback else 'off'}")
        if s.size < probe.MIN_TRAILER_PROBE:
            line += (f"\n(at {s.size} bytes a probe has no room for the responder's identity, "
                     f"which it writes into the probe: responders show as addresses only; "
                     f"-s {probe.MIN_TRAILER_PROBE} or more gives names)")
        elif s.size < probe.WHOLE_NAMES_PROBE:
            line += (f"\n(at {s.size} bytes a responder's names may be cut to fit: an echo is "
                     f"never larger than its probe; -s {probe.WHOLE_NAMES_PROBE} or more "
                     f"fits any)")
        return line

    def report(self, duration_s: float) -> None:
        s = self.settings
        if s.json:
            settings = asdict(s)
            for local_only in ("quiet", "json"):
                del settings[local_only]
            settings["session"] = f"{self.session:08x}"
            document = pingreport.json_document(settings, self.responders, self.counts,
                                                duration_s)
            print(json.dumps(document, indent=2), file=self.out, flush=True)
            return
        if not s.quiet:
            print(file=self.out)
        for line in pingreport.summary(s.target, self.responders, self.counts, s.expect):
            print(line, file=self.out, flush=True)
