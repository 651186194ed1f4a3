"""Command line: argparse only; each subcommand hands off to the module that does the job."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import NoReturn, Optional, Sequence, TextIO

from . import __version__
from .config import DEFAULT_PATH, ConfigError, config_warnings, describe, load_config
from .hostcheck import interface_warnings
from .net.limits import KernelLimits, limits_table, predicted_reports, read_limits
from .schema.keys import Config
from .schema.listener import check_interface
from .schema.values import Invalid

log = logging.getLogger("mcast_echo")

EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CONFIG = 78


class Parser(argparse.ArgumentParser):
    """argparse, with EX_USAGE (64) for bad arguments, as every subcommand's other usage
    errors, instead of argparse's 2 (which ping uses for network errors)."""

    json_errors = False  # ping or mesh --json: an argument error is also a JSON document

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        text = f"{self.prog}: error: {message}"
        if self.json_errors:
            document = {"ok": False, "error": text, "exit_status": EX_USAGE, "settings": None}
            try:
                print(json.dumps(document, indent=2), flush=True)
            except OSError:
                pass
        self.exit(EX_USAGE, text + "\n")


def default_config_path() -> str:
    return os.environ.get("MCAST_ECHO_CONFIG") or DEFAULT_PATH


def interface_option(text: str) -> str:
    """serve --interface, checked as the config's key is: a malformed one is usage (64)."""
    try:
        return check_interface(text) or text
    except Invalid as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="PATH", default=None,
                        help=f"config file (default: $MCAST_ECHO_CONFIG or {DEFAULT_PATH})")


def build_parser() -> Parser:
    """The parser; its ``subcommands`` maps each name to its own parser (for its usage)."""
    parser = Parser(
        prog="mcast-echo",
        description="Multicast echo responder: joins IP multicast groups and echoes every "
                    "datagram back to its sender by unicast; `ping` probes a group.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser("serve", help="run the responder in the foreground",
                           description="Join the configured group and echo every datagram "
                                       "back to its sender. SIGHUP reloads the config file, "
                                       "SIGTERM leaves the groups and exits.")
    _add_config_option(serve)
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                       help="override the config's log_level")
    serve.add_argument("--interface", metavar="IFACE", type=interface_option,
                       help="override the config's interface for every listener: a name, "
                            "an IPv4 or IPv6 address of this host, or all (e.g. lo for a "
                            "local try-out)")
    serve.add_argument("--detach", action="store_true",
                       help="detach from the terminal (not under systemd)")
    serve.add_argument("--pidfile", metavar="PATH", help="with --detach: write the pid here")
    serve.add_argument("--log-file", metavar="PATH",
                       help="with --detach: append the log here (else it is discarded)")
    serve.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    check = sub.add_parser("check-config", help="validate the config file (exit 0 or 78)",
                           description="Validate the config, print the effective settings "
                                       "and the kernel-limit warnings; exit 0 if valid, "
                                       "78 (EX_CONFIG) if not.")
    _add_config_option(check)
    check.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    limits = sub.add_parser("limits", help="show the kernel limits and what the config gets",
                            description="Print the /proc/sys limits that matter to multicast "
                                        "and what the config's buffers would be granted.")
    _add_config_option(limits)
    limits.add_argument("--proc", metavar="DIR", default="/proc", help=argparse.SUPPRESS)
    limits.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    try:  # only ping's options: its engine is imported when ping runs (serve starts faster)
        from .ping import options as ping
    except ImportError:  # the client is optional for the responder
        ping = None  # type: ignore[assignment]
    if ping is not None and hasattr(ping, "add_arguments"):
        ping_parser = sub.add_parser("ping", help="probe a group: every responder, RTT, loss",
                                     description="Send probes to a group and show every "
                                                 "responder with RTT, loss and hops.")
        ping.add_arguments(ping_parser)
        ping_parser.add_argument("--version", action="version",
                                 version=f"%(prog)s {__version__}")
    from .meshview import command as mesh

    mesh_parser = sub.add_parser("mesh", help="who hears whom: the mesh daemons' N×N matrix",
                                 description="Read every mesh daemon's counters twice, a "
                                             "window apart (or Prometheus once), and print "
                                             "the matrix of ordered pairs with the loss "
                                             "forward and reverse; name deaf hosts, dead "
                                             "paths and partitions.")
    mesh.add_arguments(mesh_parser)
    mesh_parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.subcommands = dict(sub.choices)  # type: ignore[attr-defined]
    return parser


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The arguments; any error exits 64 with the usage of the subcommand it belongs to."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    for name in ("ping", "mesh"):  # their --json: an argument error is a document too
        if name in parser.subcommands:
            parser.subcommands[name].json_errors = "--json" in argv
    args, extras = parser.parse_known_args(argv)
    if extras:  # argparse would blame the top level: the subcommand's usage says more
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    if args.command == "ping":
        from .ping import command as ping

        return ping.run(args)
    if args.command == "mesh":
        from .meshview import command as mesh

        return mesh.run(args)
    path = args.config or default_config_path()
    if args.command == "check-config":
        return check_config(path)
    if args.command == "limits":
        return show_limits(path, args.proc)
    return serve(args, path)


def check_config(path: str) -> int:
    """The result on stdout (the effective settings, then "PATH: ok"); the kernel-limit
    notes and the warnings of what this host lacks on stderr, as every diagnostic."""
    try:
        config = load_config(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EX_CONFIG
    print("\n".join(describe(config)), flush=True)
    _print_reports(config, read_limits(), sys.stderr)
    for warning in interface_warnings(config):  # a warning, not a failure: it may appear
        print(warning, file=sys.stderr)
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    sys.stderr.flush()
    print(f"{path}: ok")
    return EX_OK


def show_limits(path: str, proc_root: str) -> int:
    limits = read_limits(proc_root)
    print("\n".join(limits_table(limits)))
    try:
        config = load_config(path)
    except ConfigError as e:
        print(f"(no config to compare: {e.problems[0]})")
        return EX_OK
    print(f"\nwhat {path} would get:")
    _print_reports(config, limits)
    return EX_OK


def _print_reports(config: Config, limits: KernelLimits, out: Optional[TextIO] = None) -> None:
    """The limit lines a start would log, as 'warning: ...' / 'info: ...' (on stdout if no
    *out*: `limits` shows them as its result)."""
    for level, line in predicted_reports(config, limits):
        print(f"{logging.getLevelName(level).lower()}: {line}", file=out or sys.stdout)


def serve(args: argparse.Namespace, path: str) -> int:
    from .daemon.detach import Detacher, absolute, started_by_systemd
    from .daemon.logsetup import setup_logging
    from .daemon.pidfile import PidFileError
    from .daemon.service import Daemon

    overrides = {"interface": args.interface} if args.interface else {}
    if args.log_level:
        overrides["log_level"] = args.log_level
    setup_logging(args.log_level or "info")
    detacher = None
    if args.detach:
        if started_by_systemd() or os.getpid() == 1:
            log.error("--detach refused: %s; run it in the foreground",
                      "running as PID 1 (a container's init)" if os.getpid() == 1 else
                      "started by systemd (NOTIFY_SOCKET or INVOCATION_ID is set)")
            return EX_USAGE
        # Detaching changes directory to /: every path is made absolute first.
        path = absolute(path)
        detacher = Detacher(args.pidfile and absolute(args.pidfile),
                            args.log_file and absolute(args.log_file))
    elif args.pidfile or args.log_file:
        log.error("--pidfile and --log-file go with --detach")
        return EX_USAGE
    try:
        config = load_config(path, overrides)
    except ConfigError as e:
        for problem in e.problems:
            log.error("%s", problem)
        return EX_CONFIG
    setup_logging(config.log_level)

    daemon = Daemon(config, overrides, notifier=detacher.notifier if detacher else None)
    try:
        if detacher is not None:
            detacher.prepare(config.log_level)  # the pid file's lock, the log file
        log.info("mcast-echo %s starting (pid %d, config %s)", __version__, os.getpid(), path)
        for warning in config_warnings(config):
            log.warning("%s", warning)
        daemon.open()
        if detacher is None:
            return daemon.run()
        ready = detacher.fork()
        if ready is not None:  # the original process: the detached child's word decides
            return EX_OK if ready else EX_UNAVAILABLE
        with detacher.context(daemon.open_fds()):
            log.info("detached (pid %d)", os.getpid())
            return daemon.run()
    except (OSError, PidFileError) as e:
        log.error("%s", getattr(e, "strerror", None) or e)
        status = EX_UNAVAILABLE
    except Exception:
        log.exception("internal error; please report it")
        status = EX_SOFTWARE
    daemon.close()
    if detacher is not None:
        detacher.abandon()
    return status
