"""`mcast-echo ping`: probe a group and report every responder's RTT, loss and path.

cli.py adds the options of options.py to its `ping` subcommand and calls ``run``.
Data flows one way: options and the config file become ``Settings`` (here);
sockets.py (hostping.py for --protocol ssmping|rfc6450) opens the socket, pinger.py
sends probes on a schedule and matches the echoes, in the dialect --protocol chose
(dialect_mcast.py, dialect_host.py), tally.py keeps what was learnt and summary.py
says it. Probe format: wire/probe.py and docs/protocol.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import sys
import time
from typing import Any, Optional, TextIO

from ..addresses import SSM_RANGES, is_ssm_group
from ..config import DEFAULT_PATH as DEFAULT_CONFIG
from ..config import PING_ADVICE, load_config
from ..net.ifaddr import index_of_address
from ..schema.listener import ALL_INTERFACES, Listener
from . import hostping, textfile
from .dialect import Dialect
from .dialect_host import HostDialect
from .dialect_mcast import McastEchoDialect
from .display import shown
from .interrupts import Interrupts
from .options import (
    DEFAULT_GROUP,
    DEFAULT_PORT,
    DEFAULT_SIZE,
    DEFAULT_TTL,
    EXIT_ERROR,
    EXIT_FEWER,
    EXIT_OK,
    EXIT_USAGE,
    Target,
    add_arguments,
    parse_target,
)
from .pinger import OutputError, Pinger
from .settings import MCAST_ECHO, PingError, Settings, UsageError
from .sockets import open_probe_socket
from .tally import ResponderTable, RunCounts

__all__ = ["add_arguments", "run", "resolve_settings", "config_problem"]


def _load_listeners(args: argparse.Namespace) -> tuple[Optional[str], tuple[Listener, ...]]:
    """The config file's listeners, if there is a file to read.

    A file named with --config or $MCAST_ECHO_CONFIG must load; the default path
    is optional, and only warned about when it exists but is invalid. config.py
    reads it, in ping's words (PING_ADVICE) where it cannot.
    """
    explicit = args.config or os.environ.get("MCAST_ECHO_CONFIG")
    path = explicit or DEFAULT_CONFIG
    if not explicit and not os.access(path, os.R_OK):
        return None, ()
    try:
        listeners = tuple(load_config(path, advice=PING_ADVICE).listeners)
    except Exception as err:  # whatever the loader raises: a message, never a traceback
        problem = config_problem(path, err)
        if explicit:
            raise PingError(problem) from None
        print(f"mcast-echo ping: ignoring {path}: {problem}", file=sys.stderr)
        return None, ()
    return path, listeners


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
    return shown(text)


def _family(group: str) -> int:
    return ipaddress.ip_address(group).version


def _pick_listener(listeners: tuple[Listener, ...], target: Optional[Target],
                   family: Optional[int]) -> Optional[Listener]:
    """The listener defaults come from: the target's own group, else the first listener
    of the wanted family (-4/-6 or the target's), else the first."""
    if target is not None:
        for listener in listeners:
            if listener.group == target.group:
                return listener
        family = _family(target.group)
    for listener in listeners:
        if family is None or (6 if listener.ipv6 else 4) == family:
            return listener
    return None


def _local_source(listener: Optional[Listener]) -> Optional[str]:
    """The first of an SSM listener's sources that is an address of this host, if any."""
    for source in (listener.sources or ()) if listener is not None else ():
        if index_of_address(str(source).split("%")[0]) is not None:
            return str(source)
    return None


def _group_target(args: argparse.Namespace) -> Optional[Target]:
    """GROUP[:PORT] of --protocol mcast-echo; a second positional is ssmping's GROUP."""
    if args.group is not None:
        raise UsageError(f"{args.group}: a second argument (GROUP) is for --protocol ssmping "
                         "or rfc6450 HOST GROUP; mcast-echo probes take one GROUP[:PORT]")
    if args.target is None:
        return None
    try:
        target = parse_target(args.target)
    except argparse.ArgumentTypeError as err:
        hint = ""
        if "is not a multicast group" in str(err) or "is not an IPv4 or IPv6" in str(err):
            hint = (f"; to ping one responder by its address or name: --protocol ssmping "
                    f"{args.target} (or rfc6450)")
        raise UsageError(f"{err}{hint}") from None
    if args.port is not None and target.port is not None and args.port != target.port:
        raise UsageError(f"-p {args.port} and :{target.port} in the group disagree: drop one")
    return target


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Options first, then the config file's listener, then the built-in defaults."""
    if args.protocol != MCAST_ECHO:
        return hostping.resolve_settings(args)
    target = _group_target(args)
    config, listeners = _load_listeners(args)
    family: Optional[int] = getattr(args, "family", None)
    if target is not None and family is not None and _family(target.group) != family:
        raise UsageError(f"-{family} and {target.group} (an IPv{_family(target.group)} group) "
                         "disagree: drop one")
    listener = _pick_listener(listeners, target, family)
    if listener is None and family == 6 and target is None:
        where = f" and {config} has no IPv6 listener" if config else ""
        raise UsageError(f"-6: no IPv6 group to probe{where}: name one, e.g. "
                         f"mcast-echo ping [ff15::1]:{DEFAULT_PORT}")
    defaults: dict[str, Any] = {}
    if listener is not None:
        defaults = {"group": listener.group, "port": listener.port, "ttl": listener.ttl,
                    "loopback": listener.loopback,
                    "interface": None if listener.interface == ALL_INTERFACES
                    else listener.interface}
    group = target.group if target is not None else defaults.get("group", DEFAULT_GROUP)
    interface = args.interface or defaults.get("interface")
    if target is not None and target.zone:
        if args.interface and args.interface != target.zone:
            raise UsageError(f"-I {args.interface} and %{target.zone} in the group disagree: "
                             "drop one")
        interface = target.zone
    settings = Settings(
        group=group,
        port=(target.port if target is not None else None) or args.port
        or defaults.get("port", DEFAULT_PORT),
        interface=interface, source=_source(args.source, group, listener),
        count=args.count, interval=args.interval, size=args.size or DEFAULT_SIZE,
        ttl=args.ttl if args.ttl is not None else defaults.get("ttl", DEFAULT_TTL),
        loopback=args.loopback if args.loopback is not None else defaults.get("loopback", True),
        wait=args.wait, deadline=getattr(args, "deadline", None), expect=args.expect,
        quiet=args.quiet, json=args.json, numeric=getattr(args, "numeric", False),
        timestamps=getattr(args, "timestamps", False), config=config,
        textfile=getattr(args, "prometheus_textfile", None),
        ttl_from=None if args.ttl is not None else (
            f"{config}'s `ttl:`" if "ttl" in defaults else "the default"),
        spread=getattr(args, "spread", 0))
    return settings


def _source(option: Optional[str], group: str, listener: Optional[Listener]) -> Optional[str]:
    if option is None:
        return _local_source(listener) if is_ssm_group(group) else None
    if not is_ssm_group(group):
        raise UsageError(f"-S {option}: {group} is an any-source group; -S is for "
                         f"source-specific groups ({SSM_RANGES}): drop -S")
    try:
        address = ipaddress.ip_address(option)
    except ValueError:
        raise UsageError(f"-S {option!r} is not an IP address (the address of this host "
                         "that the responders list in `sources:`)") from None
    if address.version != _family(group):
        raise UsageError(f"-S {option} is an IPv{address.version} address and {group} an "
                         f"IPv{_family(group)} group: pass an address of the group's family")
    return str(address)


def _error_document(message: str, status: int, settings: Optional[Settings]) -> dict[str, Any]:
    return {"ok": False, "error": message, "exit_status": status,
            "settings": settings.for_json() if settings is not None else None}


def fail(message: str, status: int, as_json: bool, out: TextIO,
         settings: Optional[Settings] = None) -> int:
    """Say *message* on stderr (one line) and, for --json, as a document on *out*."""
    print(f"mcast-echo ping: {message}", file=sys.stderr, flush=True)
    if as_json:
        try:
            print(json.dumps(_error_document(message, status, settings), indent=2), file=out,
                  flush=True)
        except OSError:
            pass  # stdout is what failed; stderr has said it
    return status


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Run `mcast-echo ping`: 0 if at least --expect responders answered, 1 if fewer,
    2 on a network, config or output error (the textfile's included), 64 on bad options."""
    out = out or sys.stdout
    settings: Optional[Settings] = None
    pinger: Optional[Pinger] = None
    started = time.monotonic()
    try:
        settings = resolve_settings(args)
        session = secrets.randbits(32)  # tells this run's replies from any other's
        dialect: Dialect
        if settings.protocol == MCAST_ECHO:
            sock, path, no_group = open_probe_socket(settings)
            dialect = McastEchoDialect(settings, session)
        else:
            sock, path, no_group = hostping.open_host_socket(settings)
            dialect = HostDialect(settings, session)
        with sock, Interrupts() as interrupts:
            pinger = Pinger(settings, dialect, sock, path, out, no_group)
            pinger.run(interrupts)
    except UsageError as err:
        return fail(str(err), EXIT_USAGE, args.json, out, settings)
    except OutputError as err:
        _discard_stdout()
        print(f"mcast-echo ping: {err}", file=sys.stderr, flush=True)
        status = EXIT_ERROR
    except PingError as err:
        status = fail(str(err), EXIT_ERROR, args.json, out, settings)
    except BrokenPipeError:  # `mcast-echo ping | head`: stop quietly, status as far as we got
        _discard_stdout()
        status = _status(pinger, settings)
    else:
        status = _status(pinger, settings)
    if settings is not None and settings.textfile:
        # Also after a network error: the file then says the probe failed (0 responders).
        if pinger is not None:
            settings = pinger.settings  # rfc6450: with the group its session got
        duration_s = pinger.duration_s if pinger is not None else None
        if duration_s is None:  # the run never got to its report
            duration_s = time.monotonic() - started
        return _write_textfile(settings, pinger, duration_s, status)
    return status


def _status(pinger: Optional[Pinger], settings: Optional[Settings]) -> int:
    if pinger is None or settings is None:
        return EXIT_ERROR
    return EXIT_OK if pinger.responders.answered() >= settings.expect else EXIT_FEWER


def _write_textfile(settings: Settings, pinger: Optional[Pinger], duration_s: float,
                    status: int) -> int:
    """--prometheus-textfile: the run's results, or a failed run's when it never got going;
    a file that cannot be written is exit 2, one line."""
    table = pinger.responders if pinger is not None else ResponderTable(settings.port)
    counts = pinger.counts if pinger is not None else RunCounts()
    try:
        textfile.write(settings.textfile,
                       textfile.ProbeRun(settings, table, counts, duration_s, time.time()))
    except textfile.TextfileError as err:
        print(f"mcast-echo ping: {err}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    return status


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
