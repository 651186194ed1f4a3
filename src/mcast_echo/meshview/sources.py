"""Where the counters come from: each daemon's own metrics endpoint, read twice a window
apart, or a Prometheus server's query API, asked for increase() over the window.

Both give one counters.HostCounts of increases per daemon, and the sources that failed
(with why, in one line).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import counters
from .counters import HostCounts
from .fetch import Endpoint, FetchError, fetch_all, get, samples

MAX_API_BODY = 32 * 1024 * 1024  # one query's answer: 200 daemons x 200 peers fit


@dataclass
class Window:
    """The increases over the window, and every source that gave none (source -> why)."""

    hosts: list[HostCounts]
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _url_address(endpoint: Endpoint) -> Optional[str]:
    return counters.peer_address(endpoint.host)


def scrape(endpoint: Endpoint, deadline: float) -> HostCounts:
    """One daemon's mesh counters now; FetchError if it cannot be read or has no mesh."""
    found = counters.from_samples(samples(get(endpoint, deadline)), endpoint.url,
                                  _url_address(endpoint))
    if found is None:
        raise FetchError(f"no {counters.SENT}: is `mesh:` in its config?")
    if found.address is None:
        raise FetchError(f"no {counters.INFO}{{address=...}} and the URL's host is a "
                         "name: pass the daemon's address on the mesh interface in the URL")
    return found


def from_endpoints(endpoints: list[Endpoint], window: float, timeout: float,
                   sleep: Callable[[float], None] = time.sleep) -> Window:
    """Scrape every endpoint at once, again *window* seconds later, and take the increase.
    An endpoint that fails either scrape is in ``failed``."""
    jobs = {e.url: (lambda deadline, e=e: scrape(e, deadline)) for e in endpoints}
    started = time.monotonic()
    first = fetch_all(jobs, timeout)
    readable = {url: jobs[url] for url, result in first.items()
                if not isinstance(result, FetchError)}
    failed = {url: str(result) for url, result in first.items()
              if isinstance(result, FetchError)}
    if not readable:
        return Window([], failed, 0.0)
    sleep(max(0.0, window - (time.monotonic() - started)))
    second = fetch_all(readable, timeout)
    hosts = []
    for url, result in second.items():
        if isinstance(result, FetchError):
            failed[url] = str(result)
        else:
            hosts.append(counters.increase(first[url], result))  # type: ignore[arg-type]
    return Window(hosts, failed, time.monotonic() - started)


def query(api: Endpoint, expr: str, deadline: float) -> list[dict]:
    """The vector of an instant query; FetchError when the answer is not one."""
    target = api.target.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    endpoint = Endpoint(api.url, api.scheme, api.host, api.port, target)
    try:
        answer = json.loads(get(endpoint, deadline, MAX_API_BODY))
        if answer.get("status") != "success" or answer["data"]["resultType"] != "vector":
            raise FetchError(f"the query {expr!r} failed: {str(answer.get('error'))[:200]}")
        return [r for r in answer["data"]["result"] if isinstance(r.get("metric"), dict)]
    except FetchError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise FetchError(f"not a Prometheus API answer ({type(err).__name__})") from None


def from_prometheus(api: Endpoint, window: float, timeout: float) -> Window:
    """increase() over the last *window* seconds of every daemon Prometheus scrapes, one
    per (job, instance). Prometheus needs two samples in the window: a window shorter than
    twice its scrape interval finds nothing, and says so."""
    seconds = f"{max(1, round(window))}s"
    exprs = {
        counters.SENT: f"increase({counters.SENT}[{seconds}])",
        counters.REPLIES: f"increase({counters.REPLIES}[{seconds}])",
        counters.HEARD: f"increase({counters.HEARD}[{seconds}])",
        counters.PEERS_HEARD: counters.PEERS_HEARD,
        counters.INFO: counters.INFO,
    }
    jobs = {name: (lambda deadline, expr=expr: query(api, expr, deadline))
            for name, expr in exprs.items()}
    results = fetch_all(jobs, timeout)
    for result in results.values():
        if isinstance(result, FetchError):
            return Window([], {api.url: str(result)}, window)
    by_instance: dict[tuple[str, str], list] = {}
    for name, vector in results.items():
        for row in vector:  # type: ignore[union-attr]
            labels = {str(k): str(v) for k, v in row["metric"].items()}
            key = (labels.get("job", ""), labels.get("instance", ""))
            try:
                value = float(row["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            by_instance.setdefault(key, []).append((name, labels, value))
    hosts = []
    failed = {}
    for (job, instance), found in sorted(by_instance.items()):
        host_part = instance.rsplit(":", 1)[0].strip("[]") if instance else ""
        counts = counters.from_samples(found, instance or job,
                                       counters.peer_address(host_part))
        if counts is None:
            continue  # no increase of its probes in the window: not (yet) a mesh daemon
        if counts.address is None:
            failed[f"{job}/{instance}"] = (f"no {counters.INFO}{{address=...}} and its instance "
                                           "is a name: its place in the matrix is unknown")
        else:
            hosts.append(counts)
    if not hosts and not failed:
        failed[api.url] = (f"no daemon with mesh counters over the last {seconds} (is the "
                           "window at least twice the scrape interval?)")
    return Window(hosts, failed, window)
