"""`mcast-echo mesh`: the N×N matrix of who hears whom, from the daemons' mesh counters.

cli.py adds ``add_arguments`` to its `mesh` subcommand and calls ``run``. Data flows one
way: the options become endpoints (here), sources.py reads the counters' increase over the
window (each daemon's endpoint twice, or Prometheus once), matrix.py builds the matrix and
its findings, report.py says them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, TextIO

from ..ping.display import shown
from ..ping.options import EXIT_ERROR, EXIT_FEWER, EXIT_OK, EXIT_USAGE, bounded
from . import matrix, report, sources
from .fetch import Endpoint, parse_url

EXIT_PROBLEM = EXIT_FEWER  # 1: a deaf or silent host, a partition, a dead or lossy path
DEFAULT_WINDOW = 10.0  # seconds between the two scrapes of each endpoint
DEFAULT_PROMETHEUS_WINDOW = 60.0  # increase() over this much of Prometheus' history
DEFAULT_TIMEOUT = 5.0  # seconds for each round of scrapes (or queries), all at once
MAX_ENDPOINTS = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `mcast-echo mesh` options; cli.py owns the parser."""
    parser.epilog = (f"Exit status: {EXIT_OK} if every ordered pair is healthy in both "
                     f"directions, {EXIT_PROBLEM} on a deaf or silent host, a partition, a "
                     f"dead or lossy path, {EXIT_ERROR} if an endpoint (or Prometheus) "
                     f"cannot be read, {EXIT_USAGE} on bad options. Metrics and config: "
                     "/usr/share/doc/mcast-echo/mesh.md (docs/mesh.md in the source).")
    parser.add_argument("urls", nargs="*", metavar="URL",
                        help="each mesh daemon's metrics endpoint, e.g. "
                             "http://10.0.0.1:9101/metrics (a bare HOST:PORT means "
                             "http://HOST:PORT/metrics); every daemon of the mesh, at least two")
    parser.add_argument("--prometheus", metavar="URL",
                        help="read the counters from this Prometheus server's query API "
                             "(http://HOST:9090) instead: increase() over --window, every "
                             "daemon it scrapes")
    parser.add_argument("--window", type=bounded(float, 1.0, 86400.0), metavar="SECONDS",
                        help=f"seconds between the two scrapes (default: {DEFAULT_WINDOW:g}); "
                             "with --prometheus, the increase()'s range (default: "
                             f"{DEFAULT_PROMETHEUS_WINDOW:g}, at least twice its scrape "
                             "interval)")
    parser.add_argument("--timeout", type=bounded(float, 0.1, 600.0), default=DEFAULT_TIMEOUT,
                        metavar="SECONDS",
                        help="seconds each round of scrapes may take, all endpoints at once "
                             f"(default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--healthy", type=bounded(float, 0.0, 1.0),
                        default=matrix.HEALTHY_RATIO, metavar="RATIO",
                        help="a path is healthy when forward and reverse are at least RATIO "
                             f"(default: {matrix.HEALTHY_RATIO:g})")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document at the end, nothing else")


class UsageError(Exception):
    pass


def endpoints(args: argparse.Namespace) -> tuple[Optional[Endpoint], list[Endpoint]]:
    """(the Prometheus API or None, the daemons' endpoints); UsageError if they cannot be."""
    if args.prometheus and args.urls:
        raise UsageError("--prometheus and URLs: pass one or the other")
    try:
        if args.prometheus:
            return parse_url(args.prometheus, default_path=""), []
        found = [parse_url(url) for url in args.urls]
    except ValueError as err:
        raise UsageError(str(err)) from None
    if len(found) < 2:
        raise UsageError("name every daemon's metrics endpoint, at least two (e.g. "
                         "10.0.0.1:9101 10.0.0.2:9101), or --prometheus URL")
    if len(found) > MAX_ENDPOINTS:
        raise UsageError(f"{len(found)} endpoints: at most {MAX_ENDPOINTS}; use --prometheus")
    return None, found


def settings_json(args: argparse.Namespace, window: Optional[float]) -> dict[str, Any]:
    return {"urls": list(args.urls), "prometheus": args.prometheus, "window_s": window,
            "timeout_s": args.timeout, "healthy_ratio": args.healthy}


def fail(message: str, status: int, args: argparse.Namespace, out: TextIO,
         window: Optional[float]) -> int:
    """Say *message* on stderr (one line) and, for --json, as a document on *out*."""
    print(f"mcast-echo mesh: {shown(message)}", file=sys.stderr, flush=True)
    if args.json:
        document = {"ok": False, "error": message, "exit_status": status,
                    "settings": settings_json(args, window)}
        print(json.dumps(document, indent=2), file=out, flush=True)
    return status


def status_of(view: matrix.MeshView, failed: dict[str, str]) -> int:
    if failed:
        return EXIT_ERROR
    return EXIT_OK if view.healthy and len(view.hosts) >= 2 else EXIT_PROBLEM


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Run `mcast-echo mesh`: 0 if every pair is healthy, 1 if not, 2 if a source cannot be
    read, 64 on bad options."""
    out = out or sys.stdout
    window = args.window
    try:
        api, daemons = endpoints(args)
    except UsageError as err:
        return fail(str(err), EXIT_USAGE, args, out, window)
    if api is not None:
        window = window or DEFAULT_PROMETHEUS_WINDOW
        found = sources.from_prometheus(api, window, args.timeout)
    else:
        window = window or DEFAULT_WINDOW
        found = sources.from_endpoints(daemons, window, args.timeout)
    view = matrix.build(found.hosts, args.healthy)
    status = status_of(view, found.failed)
    try:
        if args.json:
            document = report.json_document(view, found.seconds, found.failed, status,
                                            settings_json(args, window))
            print(json.dumps(document, indent=2), file=out, flush=True)
        else:
            print("\n".join(report.text(view, found.seconds, found.failed)), file=out,
                  flush=True)
    except BrokenPipeError:
        pass
    return status
