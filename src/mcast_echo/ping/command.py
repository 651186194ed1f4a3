"""`mcast-echo ping`: probe a group and report every responder's RTT, loss and path.

cli.py adds these options to its `ping` subcommand (``add_arguments``) and calls
``run``. Data flows one way: options and the config file become ``Settings``
(here); pinger.py opens one socket from them, sends probes on a schedule and
matches the echoes; pingreport.py prints what was learnt. Probe format: probe.py
and docs/protocol.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
from typing import Any, Optional, TextIO

from ..config import DEFAULT_PATH as DEFAULT_CONFIG
from ..schema import Listener
from ..wire import probe
from . import report as pingreport
from .pinger import Interrupts, Pinger, PingError, Settings, open_socket

DEFAULT_GROUP = Listener.group  # the responder's defaults are the client's
DEFAULT_PORT = Listener.port
DEFAULT_TTL = Listener.ttl
DEFAULT_SIZE = 192  # room for the identity trailer with the longest names (probe.py)

# --- options -----------------------------------------------------------------------------------

def _bounded(kind: type, low: float, high: Optional[float] = None):
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


def _group_port(text: str) -> tuple[str, Optional[int]]:
    host, sep, port_text = text.partition(":")
    try:
        group = ipaddress.IPv4Address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IPv4 address") from None
    if not group.is_multicast:
        raise argparse.ArgumentTypeError(f"{host} is not a multicast group (224.0.0.0/4)")
    port = _bounded(int, 1, 65535)(port_text) if sep else None
    return str(group), port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `mcast-echo ping` options; cli.py owns the parser."""
    parser.epilog = ("Exit status: 0 if at least N (--expect) responders echoed a probe intact, "
                     "1 if fewer, 2 on a usage or network error. Probe format: "
                     "docs/protocol.md.")
    parser.add_argument("target", nargs="?", type=_group_port, metavar="GROUP[:PORT]",
                        help="group to probe (default: the config file's, else "
                             f"{DEFAULT_GROUP}:{DEFAULT_PORT})")
    parser.add_argument("-c", dest="count", type=_bounded(int, 1), metavar="COUNT",
                        help="stop after COUNT probes (default: until Ctrl-C)")
    parser.add_argument("-i", dest="interval", type=_bounded(float, 0.0), default=1.0,
                        metavar="INTERVAL", help="seconds between probes (default: 1)")
    parser.add_argument("-s", dest="size", type=_bounded(int, probe.HEADER_SIZE,
                                                         probe.MAX_UDP_PAYLOAD),
                        default=DEFAULT_SIZE, metavar="SIZE",
                        help=f"datagram bytes, {probe.HEADER_SIZE}..{probe.MAX_UDP_PAYLOAD} "
                             f"(default: {DEFAULT_SIZE})")
    parser.add_argument("-t", dest="ttl", type=_bounded(int, 0, 255), metavar="TTL",
                        help=f"multicast TTL (default: the config file's, else {DEFAULT_TTL})")
    parser.add_argument("-I", dest="interface", metavar="IFACE",
                        help="send through this interface, a name or an IPv4 address "
                             "(default: the config file's, else the route to the group)")
    parser.add_argument("-W", dest="wait", type=_bounded(float, 0.0), default=1.0,
                        metavar="WAIT", help="seconds to wait for echoes after the last probe "
                                             "(default: 1)")
    parser.add_argument("--loopback", action=argparse.BooleanOptionalAction, default=None,
                        help="let responders on this host hear the probes "
                             "(default: the config file's, else on)")
    parser.add_argument("-q", dest="quiet", action="store_true",
                        help="print only the summary")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document at the end, nothing else")
    parser.add_argument("--expect", type=_bounded(int, 0), default=1, metavar="N",
                        help="exit 0 only if at least N responders answered (default: 1)")
    parser.add_argument("--config", metavar="PATH",
                        help="config file to take defaults from (default: $MCAST_ECHO_CONFIG "
                             f"or {DEFAULT_CONFIG}, if readable)")


def _config_defaults(args: argparse.Namespace) -> tuple[Optional[str], dict[str, Any]]:
    """Group, port, interface, TTL and loopback of the config's first listener, if any.

    A file named with --config or $MCAST_ECHO_CONFIG must load; the default path
    is optional, and only warned about when it exists but is invalid.
    """
    explicit = args.config or os.environ.get("MCAST_ECHO_CONFIG")
    path = explicit or DEFAULT_CONFIG
    if not explicit and not os.access(path, os.R_OK):
        return None, {}
    try:
        from ..config import load_config
    except ImportError:  # a build without the daemon's config module
        return None, {}
    try:
        listener = load_config(path).listeners[0]
    except Exception as err:  # whatever the loader raises: a message, never a traceback
        problem = config_problem(path, err)
        if explicit:
            raise PingError(problem) from None
        print(f"mcast-echo ping: ignoring {path}: {problem}", file=sys.stderr)
        return None, {}
    return path, {"group": listener.group, "port": listener.port,
                  "interface": listener.interface, "ttl": listener.ttl,
                  "loopback": listener.loopback}


def config_problem(path: str, err: Exception) -> str:
    """One line that says what is wrong with the config file, whatever the loader raised.

    A ConfigError holds complete lines that name file:line; several become the first
    and a pointer to check-config. Anything else (a loader bug, an odd YAML value) is
    named with the file. Newlines and control characters are escaped: one line, always.
    """
    problems = getattr(err, "problems", None)  # ConfigError's
    if problems and isinstance(problems, list):
        text = str(problems[0])
        if len(problems) > 1:
            text += (f" (and {len(problems) - 1} more: "
                     f"`mcast-echo check-config -c {path}` lists them)")
    elif isinstance(err, OSError):
        text = str(err)
    else:
        text = f"{path}: cannot be read as a config ({type(err).__name__}: {err})"
    return pingreport.shown(text)


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Options first, then the config file, then the built-in defaults."""
    config, defaults = _config_defaults(args)
    group, port = args.target if args.target else (None, None)
    return Settings(
        group=group or defaults.get("group", DEFAULT_GROUP),
        port=port or defaults.get("port", DEFAULT_PORT),
        interface=args.interface or defaults.get("interface"),
        count=args.count, interval=args.interval, size=args.size,
        ttl=args.ttl if args.ttl is not None else defaults.get("ttl", DEFAULT_TTL),
        loopback=args.loopback if args.loopback is not None else defaults.get("loopback", True),
        wait=args.wait, expect=args.expect, quiet=args.quiet, json=args.json, config=config,
    )


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Run `mcast-echo ping`: 0 if at least --expect responders answered, 1 if fewer, 2 on error."""
    out = out or sys.stdout
    try:
        settings = resolve_settings(args)
        sock, via = open_socket(settings)
        with sock, Interrupts() as interrupts:
            pinger = Pinger(settings, sock, via, out)
            started = time.monotonic()
            pinger.loop(interrupts)
            pinger.report(time.monotonic() - started)
    except PingError as err:
        print(f"mcast-echo ping: {err}", file=sys.stderr, flush=True)
        return 2
    except BrokenPipeError:  # `mcast-echo ping | head`: stop quietly, status as far as we got
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if pinger.responders.answered() >= settings.expect else 1
