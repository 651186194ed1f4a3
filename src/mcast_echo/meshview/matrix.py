"""Who hears whom: the N×N matrix of ordered pairs from each daemon's counter increases over
one window, and what it says — deaf hosts, silent ones, dead and lossy paths, partitions.

Pure functions of counters.HostCounts (increases); nothing here reads the network.
For a prober P and a responder R (rows are probers, columns responders):

- forward(P→R) = Δreplies_P{R} / Δsent_P: P's multicast reached R and R's unicast reply
  reached P;
- reverse(R hears P) = Δheard_R{P} / Δsent_P: P's multicast reached R.

A host *hears* another when its heard counter for it grew; the hosts fall into the
connected components of that relation (either direction joins two hosts), and more than
one component is a partition (the matrix is block-diagonal). A deaf host hears nobody while
the others still hear it: it is named as deaf, and its dead column is not listed again path
by path; nor are the paths between two partitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from .counters import HostCounts

HEALTHY_RATIO = 0.95  # a path at or above it in both directions is healthy
FORWARD, REVERSE = "forward", "reverse"


@dataclass(frozen=True)
class Path:
    """One ordered pair over the window: what P sent, what came back, what R heard."""

    prober: str
    responder: str
    sent: float  # probes P sent
    replies: float  # replies P got from R
    heard: float  # P's probes that R heard

    def ratio(self, direction: str) -> Optional[float]:
        """forward or reverse, in 0..1; None when P sent nothing (nothing to measure).
        Two scrapes a few milliseconds apart can count one more reply than probes: a
        ratio is never more than 1."""
        if self.sent <= 0:
            return None
        got = self.replies if direction == FORWARD else self.heard
        return min(1.0, max(0.0, got / self.sent))


@dataclass(frozen=True)
class Finding:
    """A path with loss in one direction (ratio 0: dead)."""

    path: Path
    direction: str
    ratio: float


@dataclass
class MeshView:
    """The matrix and what it says; *hosts* in the order they were given, one per address."""

    hosts: list[HostCounts]
    paths: dict[tuple[str, str], Path]
    healthy_ratio: float = HEALTHY_RATIO
    silent: list[str] = field(default_factory=list)  # sent no probes in the window
    deaf: list[str] = field(default_factory=list)  # heard nobody though others sent
    partitions: list[list[str]] = field(default_factory=list)  # >1 component, or empty
    dead: list[Finding] = field(default_factory=list)  # ratio 0, not explained above
    lossy: list[Finding] = field(default_factory=list)  # 0 < ratio < healthy_ratio

    @property
    def addresses(self) -> list[str]:
        return [h.address for h in self.hosts if h.address is not None]

    def path(self, prober: str, responder: str) -> Path:
        return self.paths[(prober, responder)]

    @property
    def healthy(self) -> bool:
        return not (self.silent or self.deaf or self.partitions or self.dead or self.lossy)

    def healthy_pairs(self) -> int:
        return sum(1 for p in self.paths.values()
                   if all((p.ratio(d) or 0.0) >= self.healthy_ratio for d in (FORWARD, REVERSE)))


def build(hosts: Iterable[HostCounts], healthy_ratio: float = HEALTHY_RATIO) -> MeshView:
    """The matrix of *hosts* (increases over one window, each with its own address; a
    second entry for an address already seen is dropped) and its findings."""
    unique: dict[str, HostCounts] = {}
    for host in hosts:
        if host.address is not None and host.address not in unique:
            unique[host.address] = host
    ordered = list(unique.values())
    paths = {(p.address, r.address): Path(p.address, r.address, p.sent,
                                          p.replies.get(r.address, 0.0),
                                          r.heard.get(p.address, 0.0))
             for p in ordered for r in ordered if p is not r}
    view = MeshView(ordered, paths, healthy_ratio)  # type: ignore[arg-type]
    view.silent = [h.address for h in ordered if h.sent <= 0]  # type: ignore[misc]
    view.deaf = _deaf(ordered)
    components = _components(view)
    if len(components) > 1:
        view.partitions = components
    view.dead, view.lossy = _findings(view, components)
    return view


def _deaf(hosts: list[HostCounts]) -> list[str]:
    """Hosts that heard no probe at all (from any prober, scraped or not) while another
    host sent some."""
    deaf = []
    for host in hosts:
        others_sent = any(o.sent > 0 for o in hosts if o is not host)
        if others_sent and sum(host.heard.values()) <= 0:
            deaf.append(host.address)
    return deaf  # type: ignore[return-value]


def _components(view: MeshView) -> list[list[str]]:
    """The connected components of "hears" among the hosts that sent probes (a silent host
    is named as such, not as a partition), each in the hosts' order, largest first."""
    members = [a for a in view.addresses if a not in view.silent]
    parent = {a: a for a in members}

    def root(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for (prober, responder), path in view.paths.items():
        if prober in parent and responder in parent and (path.heard > 0 or path.replies > 0):
            parent[root(prober)] = root(responder)
    groups: dict[str, list[str]] = {}
    for a in members:
        groups.setdefault(root(a), []).append(a)
    return sorted(groups.values(), key=lambda g: -len(g))


def _findings(view: MeshView, components: list[list[str]]) -> tuple[list[Finding],
                                                                   list[Finding]]:
    """Dead and lossy paths, but not those a deaf responder or a partition explains."""
    block = {a: i for i, group in enumerate(components) for a in group}
    dead: list[Finding] = []
    lossy: list[Finding] = []
    for (prober, responder), path in view.paths.items():
        if responder in view.deaf or block.get(prober) != block.get(responder):
            continue
        for direction in (FORWARD, REVERSE):
            ratio = path.ratio(direction)
            if ratio is None:
                continue
            if ratio <= 0:
                dead.append(Finding(path, direction, ratio))
            elif ratio < view.healthy_ratio:
                lossy.append(Finding(path, direction, ratio))
    return dead, lossy
