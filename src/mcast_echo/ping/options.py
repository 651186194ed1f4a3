"""The `mcast-echo ping` options: cli.py owns the parser, this module adds ping's part."""

from __future__ import annotations

import argparse
import ipaddress
import os
from typing import NamedTuple, Optional

from ..addresses import (
    MULTICAST_RANGES,
    SSMPING_GROUP_V4,
    SSMPING_GROUP_V6,
    is_ipv4_mapped,
    is_multicast,
    not_a_group,
)
from ..config import DEFAULT_PATH as DEFAULT_CONFIG
from ..schema.listener import Listener
from ..wire import probe, ssmping
from .settings import MCAST_ECHO, PROTOCOLS

DEFAULT_GROUP = Listener.group  # the responder's defaults are the client's
DEFAULT_PORT = Listener.port
DEFAULT_TTL = Listener.ttl
DEFAULT_SIZE = 192  # room for the identity trailer with the longest names (probe.py)
# --protocol ssmping and rfc6450: the responder's port. ssmpingd's is fixed at 4321; RFC 6450
# section 7 assigns 9903, but the responders that speak it (mcast-echo's listener, omping)
# listen on 4321, so one default serves both dialects (-p 9903 for the RFC's).
PING_PORT = ssmping.PORT
REQUEST_TTL = 64  # the unicast requests' TTL: Linux's default, and ssmpingd's for its replies
MIN_USER_INTERVAL = 0.2  # -i below it is root's (ping(8)'s floor): a user cannot flood a group

# Exit statuses of `mcast-echo ping`; the man page's table and the tests read these.
EXIT_OK = 0  # at least --expect responders counted (responderstats.py's ResponderStats.counted)
EXIT_FEWER = 1  # fewer did
EXIT_ERROR = 2  # a network, config-file or output error
EXIT_USAGE = 64  # bad options (EX_USAGE, as every subcommand)


class Target(NamedTuple):
    group: str
    port: Optional[int]
    zone: Optional[str]  # the %IFACE of [ff02::1%eth0]:9999


def bounded(kind: type, low: float, high: Optional[float] = None):
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range {allowed}")
        return value
    return convert


def count(text: str) -> int:
    """-c COUNT, as ping(8)'s; serve's -c is its config file, so a path here gets a pointer."""
    try:
        return bounded(int, 1)(text)
    except argparse.ArgumentTypeError:
        if "/" in text or text.endswith((".yaml", ".yml")):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a count: in ping, -c is the number of probes (as in "
                f"ping(8)); for a config file use --config {text}") from None
        raise


def interval(text: str) -> float:
    """-i INTERVAL: below MIN_USER_INTERVAL only for root, as ping(8) has it."""
    value = bounded(float, 0.0)(text)
    if value < MIN_USER_INTERVAL and os.geteuid() != 0:
        raise argparse.ArgumentTypeError(
            f"{text} is below {MIN_USER_INTERVAL:g} s, the shortest interval for a user other "
            f"than root (as in ping(8)): it would flood the group; use -i {MIN_USER_INTERVAL:g} "
            "or more, or run as root")
    return value


def parse_target(text: str) -> Target:
    """`224.3.29.71`, `224.3.29.71:9999`, `[ff15::1]:9999`, `ff15::1`, `[ff02::1%eth0]:9999`.

    A bare IPv6 group has no port: `ff15::1:9999` is an address, so a port needs brackets.
    """
    port_text: Optional[str] = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"{text!r} is not [IPv6-GROUP]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        host = text
    else:
        host, sep, after = text.partition(":")
        port_text = after if sep else None
    host, _, zone = host.partition("%")
    try:
        group = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{host!r} is not an IPv4 or IPv6 address (e.g. 239.1.1.1:5000 or "
            "[ff15::1]:5000)") from None
    if not is_multicast(group):
        if is_ipv4_mapped(group):
            raise argparse.ArgumentTypeError(not_a_group(group))
        raise argparse.ArgumentTypeError(f"{host} is not a multicast group "
                                         f"({MULTICAST_RANGES[group.version]})")
    if zone and group.version == 4:
        raise argparse.ArgumentTypeError(f"{text}: only an IPv6 group takes %IFACE")
    port = bounded(int, 1, 65535)(port_text) if port_text is not None else None
    return Target(str(group), port, zone or None)


def parse_host(text: str) -> tuple[str, Optional[int]]:
    """HOST[:PORT] of --protocol ssmping / rfc6450: `server`, `server:4321`, `10.0.0.1`,
    `fd00::1`, `[fd00::1]:4321`, `[fe80::1%eth0]`. The host is not looked up here."""
    port_text: Optional[str] = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"{text!r} is not [IPv6-ADDRESS]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r} names no host")
    return host, bounded(int, 1, 65535)(port_text) if port_text is not None else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `mcast-echo ping` options; cli.py owns the parser."""
    parser.epilog = (f"Exit status: {EXIT_OK} if at least N (--expect) responders counted "
                     "(intact echoes from other hosts than this one, and by the group when "
                     f"they echo there), {EXIT_FEWER} if fewer, {EXIT_ERROR} on a network, "
                     f"config-file or output error, {EXIT_USAGE} on bad options. "
                     "Probe format: /usr/share/doc/mcast-echo/protocol.md (docs/protocol.md "
                     "in the source).")
    parser.add_argument("target", nargs="?", metavar="GROUP[:PORT] | HOST[:PORT]",
                        help="group to probe: 239.1.1.1:5000, [ff15::1]:5000 or ff15::1 "
                             "(default: the config file's, else "
                             f"{DEFAULT_GROUP}:{DEFAULT_PORT}); with --protocol ssmping or "
                             "rfc6450, the responder to ping: a name or an address")
    parser.add_argument("group", nargs="?", metavar="GROUP",
                        help="with --protocol ssmping, the group the multicast replies are "
                             "asked to (as asmping's; default: ssmping's "
                             f"{SSMPING_GROUP_V4} or {SSMPING_GROUP_V6}); with rfc6450, the "
                             "group the Init asks for (default: any the responder offers)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=MCAST_ECHO,
                        help="mcast-echo probes a group (the default); ssmping (ssmping 0.9.1, "
                             "as Debian's ssmpingd answers) and rfc6450 (RFC 6450) ping one "
                             f"HOST, which replies by unicast and to a group (port {PING_PORT})")
    parser.add_argument("-p", dest="port", type=bounded(int, 1, 65535), metavar="PORT",
                        help="the responders' port (default: the group's :PORT, the config "
                             f"file's, else {DEFAULT_PORT}; ssmping and rfc6450: {PING_PORT})")
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", dest="family", action="store_const", const=4,
                        help="IPv4: the config file's first IPv4 listener")
    family.add_argument("-6", dest="family", action="store_const", const=6,
                        help="IPv6: the config file's first IPv6 listener")
    parser.add_argument("-c", dest="count", type=count, metavar="COUNT",
                        help="stop after COUNT probes (default: until Ctrl-C); the config "
                             "file is --config")
    parser.add_argument("-i", dest="interval", type=interval, default=1.0,
                        metavar="INTERVAL", help="seconds between probes (default: 1; "
                                                 f"below {MIN_USER_INTERVAL:g} only for root)")
    parser.add_argument("-s", dest="size", type=bounded(int, probe.HEADER_SIZE,
                                                        probe.MAX_UDP_PAYLOAD),
                        metavar="SIZE",
                        help=f"probe bytes, {probe.HEADER_SIZE}..{probe.MAX_UDP_PAYLOAD} "
                             f"(default: {DEFAULT_SIZE}; not for ssmping and rfc6450, whose "
                             "requests have their own size)")
    parser.add_argument("-t", dest="ttl", type=bounded(int, 0, 255), metavar="TTL",
                        help="multicast TTL or hop limit (default: the config file's, "
                             f"else {DEFAULT_TTL}); ssmping and rfc6450: the unicast "
                             f"requests' (default: {REQUEST_TTL})")
    parser.add_argument("-I", dest="interface", metavar="IFACE",
                        help="send through this interface, a name or an address of it "
                             "(default: the config file's, else the route to the group)")
    parser.add_argument("-S", dest="source", metavar="SOURCE",
                        help="source-specific groups (232/8, ff3x::): send from this "
                             "address of this host, one the responders list in `sources:`")
    parser.add_argument("-W", dest="wait", type=bounded(float, 0.0), default=1.0,
                        metavar="WAIT", help="seconds to wait for echoes after the last probe "
                                             "(default: 1)")
    parser.add_argument("-w", dest="deadline", type=bounded(float, 0.0), metavar="DEADLINE",
                        help="stop after DEADLINE seconds, however many probes were sent; "
                             "without -c, a probe whose answer cannot come back by then is "
                             "not sent")
    parser.add_argument("--spread", type=bounded(int, 0, probe.MAX_SPREAD_MS), default=0,
                        metavar="MS",
                        help="ask each responder to delay each echo by 0..MS ms, drawn "
                             "afresh per reply, so that many do not answer at once "
                             f"(0..{probe.MAX_SPREAD_MS}; default: 0, no delay); RTTs stay "
                             "the network's, and the wait after the last probe covers it")
    parser.add_argument("--loopback", action=argparse.BooleanOptionalAction, default=None,
                        help="let responders on this host hear the probes "
                             "(default: the config file's, else on)")
    parser.add_argument("-n", dest="numeric", action="store_true",
                        help="numeric output: do not look up responders' host names")
    parser.add_argument("-D", dest="timestamps", action="store_true",
                        help="start each reply line with its time, [seconds.micro] since 1970")
    parser.add_argument("-q", dest="quiet", action="store_true",
                        help="print only the banner and the summary (its statistics, notes "
                             "and hints): no line per echo")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document at the end, nothing else")
    parser.add_argument("--expect", type=bounded(int, 0), default=1, metavar="N",
                        help="exit 0 only if at least N responders counted (default: 1); "
                        "this host's own responder is shown as (local) and never counts")
    parser.add_argument("--prometheus-textfile", metavar="PATH",
                        help="after the run, write its results for node_exporter's textfile "
                             "collector to PATH (replaced atomically, mode 0644)")
    parser.add_argument("--config", metavar="PATH",
                        help="config file to take defaults from (default: $MCAST_ECHO_CONFIG "
                             f"or {DEFAULT_CONFIG}, if readable)")
