"""`mcast-echo ping --protocol ssmping|rfc6450 HOST`: ping one responder the standard ways.

The responder is Debian's ssmpingd, mcast-echo's own ssmping listener, or any other that
speaks ssmping 0.9.1 or RFC 6450. Each request goes by unicast to HOST's port (4321);
the responder answers twice, by unicast and to a group, on our own port. So the socket
joins that group -- source-specific, (HOST, group), for an SSM group, any-source for
another (asmping's way) -- and IP_PKTINFO tells the two replies apart, as for mcast-echo's
probes. ssmping asks for the group itself (232.43.211.234 or ff3e::4321:1234, or the
GROUP given); RFC 6450 gets it, with a Session ID, from the Server Response to an Init.

The loop, the output, --json and the exit statuses are pinger.py's: ``HostPinger`` only
builds other requests, matches other replies, and keeps stats per path (pathstats.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import selectors
import socket
import sys
import time
from typing import Optional, TextIO

from ..addresses import is_multicast, is_ssm_group, needs_zone
from ..net.ancillary import Received
from ..net.errnoadvice import ping_error_text
from ..net.ifaddr import index_of_address
from ..net.mcast import interface_name
from ..wire import ssmping
from . import report as pingreport
from .dialects import Rfc6450, Ssmping
from .options import PING_PORT, REQUEST_TTL, parse_host
from .pathstats import HostStats, as_echo
from .pinger import Interrupts, Pinger
from .settings import RFC6450, SSMPING, PingError, Settings, UsageError
from .sockets import Path, interface_index, join_group, set_receive_options

INIT_TRIES = 3  # RFC 6450 Inits sent before giving up on a responder
INIT_WAIT = 1.0  # seconds each Init waits for its Server Response (less under -i or -w)


def explain(err: OSError, settings: Settings) -> str:
    """One line for a failed connect, bind or send to HOST: what failed, and the fix."""
    return ping_error_text(err, of_host=True, target=settings.host or "", shown=settings.target,
                           ipv6=settings.ipv6, interface=settings.interface,
                           source=settings.source)


# --- options -> Settings -------------------------------------------------------------------

def resolve_settings(args: argparse.Namespace) -> Settings:
    """HOST (looked up), its port, the group, and the options that apply to these dialects."""
    protocol: str = args.protocol
    if args.target is None:
        raise UsageError(f"--protocol {protocol} pings one responder: name it, e.g. "
                         f"mcast-echo ping --protocol {protocol} HOST")
    if args.size is not None:
        raise UsageError(f"-s sets the size of mcast-echo probes; {protocol} requests have "
                         "their own: drop -s")
    if getattr(args, "spread", 0):
        raise UsageError(f"--spread is carried in mcast-echo probes; {protocol} requests "
                         "cannot ask for it: drop --spread")
    try:
        host_text, port = parse_host(args.target)
    except argparse.ArgumentTypeError as err:
        raise UsageError(str(err)) from None
    if args.port is not None and port is not None and args.port != port:
        raise UsageError(f"-p {args.port} and :{port} in HOST disagree: drop one")
    host, zone = _look_up(host_text, args.family)
    family = ipaddress.ip_address(host).version
    group = _group(args.group, family, protocol)
    interface = args.interface
    if zone:
        if interface and interface != zone:
            raise UsageError(f"-I {interface} and %{zone} in HOST disagree: drop one")
        interface = zone
    source = _source(args.source, family)
    shown_host = f"{host}%{zone}" if zone else host
    settings = Settings(
        group=str(group) if group is not None else "", port=port or args.port or PING_PORT,
        interface=interface, source=source, count=args.count, interval=args.interval,
        size=0, ttl=args.ttl if args.ttl is not None else REQUEST_TTL,
        loopback=args.loopback if args.loopback is not None else True, wait=args.wait,
        deadline=args.deadline, expect=args.expect, quiet=args.quiet, json=args.json,
        numeric=args.numeric, timestamps=args.timestamps, config=None,
        textfile=args.prometheus_textfile, protocol=protocol, host=shown_host,
        host_name=None if host_text.split("%")[0] == host else host_text)
    return settings


def _look_up(text: str, family: Optional[int]) -> tuple[str, Optional[str]]:
    """HOST as an address (the first the resolver gives of the wanted family) and its zone."""
    name, _, zone = text.partition("%")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is not None:
        if family is not None and address.version != family:
            raise UsageError(f"-{family} and {name} (an IPv{address.version} address) "
                             "disagree: drop one")
        if is_multicast(address):
            raise UsageError(f"{name} is a multicast group: --protocol ssmping and rfc6450 "
                             "ping one responder by its unicast address or name; to probe "
                             "a group, use --protocol mcast-echo (the default)")
        if zone and address.version == 4:
            raise UsageError(f"{text}: only an IPv6 address takes %IFACE")
        return str(address), zone or None
    wanted = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family or 0, socket.AF_UNSPEC)
    try:
        found = socket.getaddrinfo(name, None, wanted, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as err:
        which = f" (IPv{family})" if family else ""
        raise PingError(f"cannot look up {pingreport.shown(name)}{which}: "
                        f"{getattr(err, 'strerror', None) or err}: check the name, or "
                        "pass an address") from None
    return found[0][4][0].split("%")[0], zone or None


def _group(text: Optional[str], family: int, protocol: str) -> Optional[ipaddress._BaseAddress]:
    """The group asked for: GROUP, else ssmping's default one of the family (rfc6450: the
    responder's choice, None)."""
    if text is None:
        return ssmping.DEFAULT_GROUPS[family] if protocol == SSMPING else None
    try:
        group = ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"GROUP {text!r} is not an IPv4 or IPv6 address") from None
    if not is_multicast(group):
        raise UsageError(f"GROUP {text} is not a multicast group")
    if group.version != family:
        raise UsageError(f"GROUP {text} is an IPv{group.version} group and HOST an "
                         f"IPv{family} address: pass a group of HOST's family")
    return group


def _source(option: Optional[str], family: int) -> Optional[str]:
    """-S: the address of this host the requests leave from."""
    if option is None:
        return None
    try:
        address = ipaddress.ip_address(option.split("%")[0])
    except ValueError:
        raise UsageError(f"-S {option!r} is not an IP address (one of this host's)") from None
    if address.version != family:
        raise UsageError(f"-S {option} is an IPv{address.version} address and HOST an "
                         f"IPv{family} one: pass an address of HOST's family")
    return option


# --- the socket ------------------------------------------------------------------------------

def destination(settings: Settings, index: int) -> tuple:
    assert settings.host is not None
    address = settings.host.split("%")[0]
    if settings.ipv6:
        scope = index if needs_zone(address) else 0
        return (address, settings.port, 0, scope)
    return (address, settings.port)


def _path(settings: Settings, index: int) -> Path:
    """Where requests to HOST leave from: a throwaway socket, bound like ours, connected."""
    family = socket.AF_INET6 if settings.ipv6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if settings.source:
            sock.bind((settings.source.split("%")[0], 0, 0, index) if settings.ipv6
                      else (settings.source, 0))
        sock.connect(destination(settings, index))
        local = sock.getsockname()
    source = local[0]
    if index == 0:
        index = (local[3] if settings.ipv6 and local[3]
                 else index_of_address(source.split("%")[0])) or 0
    return Path(index, interface_name(index) if index else None, source)


def open_host_socket(settings: Settings) -> tuple[socket.socket, Path, str]:
    """The socket that sends the requests and hears both replies, where requests leave
    from, and why replies to the group will not be heard ("" when they will: ssmping
    joins now, rfc6450 once its session names the group)."""
    index = interface_index(settings)
    try:
        path = _path(settings, index)
    except OSError as err:
        raise PingError(explain(err, settings)) from None
    family = socket.AF_INET6 if settings.ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if settings.ipv6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, settings.ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, settings.ttl)
        set_receive_options(sock, settings.ipv6)
        # Wildcard-bound, as ssmping's: a socket bound to a unicast address never gets
        # datagrams sent to the group. -S goes into each request (sendmsg pktinfo).
        sock.bind(("::", 0) if settings.ipv6 else ("0.0.0.0", 0))
    except OSError as err:
        sock.close()
        raise PingError(explain(err, settings)) from None
    no_group = ""
    if settings.group:
        no_group = join_for_replies(sock, settings, path.index)
    return sock, path, no_group


def join_for_replies(sock: socket.socket, settings: Settings, index: int) -> str:
    """Join the group the replies come to: (HOST, group) for SSM, else any source."""
    source = settings.host if is_ssm_group(settings.group) else None
    return join_group(sock, settings.group, index, source)


# --- the run -----------------------------------------------------------------------------------

class HostPinger(Pinger):
    """pinger.py's loop, speaking ssmping or RFC 6450 to one HOST."""

    def __init__(self, settings: Settings, sock: socket.socket, path: Path, out: TextIO,
                 no_group: str = "") -> None:
        super().__init__(settings, sock, path, out, no_group)
        self.destination = destination(settings, path.index)
        self.responders = pingreport.ResponderTable(settings.port, stats_type=HostStats)
        if settings.protocol == RFC6450:
            wanted = ipaddress.ip_address(settings.group) if settings.group else None
            self.dialect: Ssmping | Rfc6450 = Rfc6450(self.session, wanted, settings.ipv6)
        else:
            self.dialect = Ssmping(self.session, ipaddress.ip_address(settings.group))
            self._sized()
        self.inits_sent = 0
        self.title = "SSMPING" if settings.protocol == SSMPING else "RFC6450 PING"

    def _sized(self) -> None:
        """The request size, for the banner and JSON (settings.size)."""
        self.settings = dataclasses.replace(self.settings,
                                            size=len(self.dialect.request(0, time.time_ns())))

    def request(self, seq: int, sent_ns: int) -> bytes:
        return self.dialect.request(seq, sent_ns)

    def handle(self, data: bytes, arrival: Received, source: tuple) -> None:
        via = pingreport.GROUP if arrival.to_group else pingreport.UNICAST
        reply = self.dialect.reply(data)  # SessionRefused ends the run: exit 2
        if reply is None:
            if via == pingreport.UNICAST:
                self.counts.stray += 1  # no reply to a request of this run
            return
        found = self.responder(reply.seq, arrival, source)
        if found is None:
            return
        stats, rtt_ns, rx_ns = found
        assert isinstance(stats, HostStats)
        stats.group = stats.group or self.settings.group
        outcome = stats.record_reply(reply, rtt_ns, arrival.ttl, via)
        self._say(pingreport.reply_line(stats, as_echo(reply), reply.length, rtt_ns, outcome, via,
                                        rx_ns if self.settings.timestamps else None))

    def run(self, interrupts: Interrupts) -> None:
        """Pinger.run, after RFC 6450's Init: -w counts from the start, Init included."""
        started = time.monotonic()
        if isinstance(self.dialect, Rfc6450) and not self._open_session(interrupts, started):
            self.report(self.elapsed(started), started)
            return
        if self.no_group:
            print(f"mcast-echo ping: {self.no_group}", file=sys.stderr, flush=True)
        self.loop(interrupts, started)
        self.report(self.elapsed(started), started)

    def _open_session(self, interrupts: Interrupts, started: float) -> bool:
        """RFC 6450 section 4: Init, then the Server Response's group and Session ID.
        False when the responder does not answer (the report then says so)."""
        assert isinstance(self.dialect, Rfc6450)
        hard_end = started + self.settings.deadline if self.settings.deadline else None
        wait = min(INIT_WAIT, max(self.settings.interval, 0.2))
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            while self.inits_sent < INIT_TRIES and not interrupts.requested:
                try:
                    self.sock.sendmsg([self.dialect.init()], self.source_pktinfo, 0,
                                      self.destination)
                except OSError as err:
                    raise PingError(explain(err, self.settings)) from None
                self.inits_sent += 1
                end = time.monotonic() + wait
                if hard_end is not None:
                    end = min(end, hard_end)
                while time.monotonic() < end and not interrupts.requested:
                    if selector.select(max(0.0, end - time.monotonic())) and self._response():
                        return True
                if hard_end is not None and time.monotonic() >= hard_end:
                    break
        return False

    def _response(self) -> bool:
        """Read what is waiting; True once the Server Response gave us a session."""
        assert isinstance(self.dialect, Rfc6450)
        for _ in range(pingreport.SEQ_WINDOW):
            try:
                data, _ancdata, _flags, _source = self.sock.recvmsg(65535, 0,
                                                                    socket.MSG_DONTWAIT)
            except OSError:  # nothing more, or an ICMP error (port unreachable): go on
                return False
            if self.dialect.session_response(data, self.settings.host or ""):
                group = str(self.dialect.group)
                self.settings = dataclasses.replace(self.settings, group=group)
                self._sized()
                self.no_group = join_for_replies(self.sock, self.settings, self.path.index)
                return True
        return False

    def banner(self) -> str:
        s = self.settings
        host = s.host if s.host_name is None else f"{pingreport.shown(s.host_name)} ({s.host})"
        kind = "source-specific, joined for" if s.ssm else "any-source"
        server = getattr(self.dialect, "server", None)
        line = (f"{self.title} {host} port {s.port} via {self.path.text()}: replies to "
                f"{s.group} ({kind}{' ' + s.host if s.ssm else ''}), {s.size}-byte requests, "
                f"{'hop limit' if s.ipv6 else 'ttl'} {s.ttl}")
        if server:
            line += f", server {pingreport.shown(server)}"
        return line

    def notes(self) -> list[str]:
        return []

    def hints(self) -> list[str]:
        """What to check when no multicast reply came: HOST silent, or only unicast."""
        if self.responders.answered() > 0:
            return []
        s = self.settings
        if isinstance(self.dialect, Rfc6450) and self.dialect.group is None:
            return [f"responder: {s.host} did not answer {self.inits_sent} RFC 6450 Init(s) "
                    f"on port {s.port}: is a responder running there (mcast-echo serve with "
                    "`ssmping:` in its config; omping), on that port (the RFC's is 9903: "
                    "-p 9903)?",
                    f"firewall: UDP to {s.host} port {s.port} must reach it, and its "
                    "replies come back in"]
        if self.counts.transmitted == 0:
            return []
        if not any(stats.paths[pingreport.UNICAST].received for stats in self.responders
                   if isinstance(stats, HostStats)):
            daemon = "ssmpingd" if s.protocol == SSMPING else "an RFC 6450 responder"
            return [f"responder: nothing came back from {s.host} port {s.port}: is {daemon} "
                    "(or mcast-echo serve with `ssmping:`) running there, on that port?",
                    f"firewall: UDP to {s.host} port {s.port} must reach it, and UDP from "
                    f"port {s.port} must come back in",
                    f"route: requests left from {self.path.text()}: is that the way to "
                    f"{s.host}?"]
        found = [f"multicast: unicast replies came but none to {s.group}: the multicast "
                 f"path from {s.host} to here does not deliver (a router without PIM or "
                 "IGMP/MLD toward this link, IGMP snooping, a firewall on UDP to the group)"]
        if not is_ssm_group(s.group):
            found.append(f"group: {s.group} is any-source: the responder must agree to "
                         "answer to it (mcast-echo: its `ssmping: groups:`; ssmpingd: "
                         "groups ending in .234 or ::4321:1234)")
        if self.no_group:
            found.append(self.no_group)
        return found

