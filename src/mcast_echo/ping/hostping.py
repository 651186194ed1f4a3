"""`mcast-echo ping --protocol ssmping|rfc6450 HOST`: ping one responder the standard ways.

The responder is Debian's ssmpingd, mcast-echo's own ssmping listener, or any other that
speaks ssmping 0.9.1 or RFC 6450. Each request goes by unicast to HOST's port (4321);
the responder answers twice, by unicast and to a group, on our own port. So the socket
joins that group -- source-specific, (HOST, group), for an SSM group, any-source for
another (asmping's way) -- and IP_PKTINFO tells the two replies apart, as for mcast-echo's
probes. ssmping asks for the group itself (232.43.211.234 or ff3e::4321:1234, or the
GROUP given); RFC 6450 gets it, with a Session ID, from the Server Response to an Init.

Here: HOST's settings and the socket. The loop, the output, --json and the exit statuses
are pinger.py's; the requests, the replies and their words are dialect_host.py's.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from typing import Optional

from ..addresses import is_multicast, needs_zone
from ..net.errnoadvice import ping_error_text
from ..net.ifaddr import index_of_address
from ..net.mcast import interface_name
from ..wire import ssmping
from .display import shown
from .options import PING_PORT, REQUEST_TTL, parse_host
from .settings import SSMPING, PingError, Settings, UsageError
from .sockets import Path, interface_index, join_for_replies, set_receive_options


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
        raise PingError(f"cannot look up {shown(name)}{which}: "
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
    """The sendto() address of HOST's port; a link-local IPv6 HOST carries its interface."""
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
