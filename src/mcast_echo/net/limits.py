"""What the kernel will really give: buffer and membership limits from /proc.

Pure functions over a /proc root, so tests can hand in a fake tree. Linux
takes a SO_RCVBUF/SO_SNDBUF request, caps it at net.core.rmem_max/wmem_max
and doubles it (the second half is for its own bookkeeping); getsockopt then
reports the doubled value.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from ..schema.keys import Config
from ..schema.listener import ALL_INTERFACES, Listener

SOCK_MIN_RCVBUF = 2304  # the kernel's floor, roughly; only matters for tiny requests
SOCK_MIN_SNDBUF = 4608
NEIGHBOURS_BESIDE_MESH = 64  # ARP entries a host holds besides its mesh peers (routers, ...)

SYSCTLS = {
    "rmem_max": "sys/net/core/rmem_max",
    "wmem_max": "sys/net/core/wmem_max",
    "rmem_default": "sys/net/core/rmem_default",
    "wmem_default": "sys/net/core/wmem_default",
    "igmp_max_memberships": "sys/net/ipv4/igmp_max_memberships",
    "igmp_max_msf": "sys/net/ipv4/igmp_max_msf",
    "mld_max_msf": "sys/net/ipv6/mld_max_msf",
    "optmem_max": "sys/net/core/optmem_max",
    # the ARP table's soft and hard caps: one table for the whole host, every netns in it
    "gc_thresh2": "sys/net/ipv4/neigh/default/gc_thresh2",
    "gc_thresh3": "sys/net/ipv4/neigh/default/gc_thresh3",
}


@dataclass(frozen=True)
class KernelLimits:
    """Each value is None when the file could not be read (e.g. hidden by a sandbox)."""

    rmem_max: Optional[int] = None
    wmem_max: Optional[int] = None
    rmem_default: Optional[int] = None
    wmem_default: Optional[int] = None
    igmp_max_memberships: Optional[int] = None
    igmp_max_msf: Optional[int] = None
    mld_max_msf: Optional[int] = None
    optmem_max: Optional[int] = None
    gc_thresh2: Optional[int] = None
    gc_thresh3: Optional[int] = None


def read_limits(proc_root: str = "/proc") -> KernelLimits:
    values: dict[str, Optional[int]] = {}
    for name, relpath in SYSCTLS.items():
        try:
            with open(os.path.join(proc_root, relpath)) as f:
                values[name] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            values[name] = None
    return KernelLimits(**values)


def unprivileged_port_start(proc_root: str = "/proc") -> int:
    """net.ipv4.ip_unprivileged_port_start: the lowest port a user without
    CAP_NET_BIND_SERVICE may bind (1024, Linux's default, when it cannot be read)."""
    try:
        with open(os.path.join(proc_root, "sys/net/ipv4/ip_unprivileged_port_start")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 1024


def sysctl_name(limit: str) -> str:
    """The sysctl's dotted name (net.core.rmem_max) for a key of SYSCTLS."""
    return SYSCTLS[limit][len("sys/"):].replace("/", ".")


def human(size: Optional[int]) -> str:
    if size is None:
        return "unknown"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % (factor // 8) == 0:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class BufferReport:
    """One socket buffer: what was asked, what the kernel gave, and what limits it."""

    kind: str  # "receive" or "send"
    requested: Optional[int]  # None: not configured, the kernel default applies
    granted: Optional[int]  # from getsockopt; None when only predicting
    limit_name: str  # "rmem_max" / "wmem_max"
    limit: Optional[int]
    default: Optional[int]

    @property
    def expected(self) -> Optional[int]:
        floor = SOCK_MIN_RCVBUF if self.kind == "receive" else SOCK_MIN_SNDBUF
        return expected_grant(self.requested, self.limit, self.default, floor)

    @property
    def capped(self) -> bool:
        return (self.requested is not None and self.limit is not None
                and self.requested > self.limit)

    @property
    def level(self) -> int:
        return logging.WARNING if self.capped else logging.INFO

    def message(self) -> str:
        got = (f"granted {human(self.granted)}" if self.granted is not None
               else f"would get {human(self.expected)}")
        if self.requested is None:
            default_name = self.limit_name.replace("_max", "_default")
            return (f"{self.kind} buffer: kernel default, {got} "
                    f"({sysctl_name(default_name)} = {human(self.default)})")
        text = (f"{self.kind} buffer: requested {human(self.requested)}, {got} "
                f"(limit {sysctl_name(self.limit_name)} = {human(self.limit)}; "
                "Linux doubles the request for its bookkeeping)")
        if self.capped:
            text += (f"; capped, so the buffer is {human(self.limit)} usable instead of "
                     f"{human(self.requested)}: fix with "
                     f"`sysctl -w {sysctl_name(self.limit_name)}={self.requested}`")
        return text


def expected_grant(requested: Optional[int], limit: Optional[int],
                   default: Optional[int], floor: int = SOCK_MIN_RCVBUF) -> Optional[int]:
    """What getsockopt will report for a request, as Linux computes it."""
    if requested is None:
        return default
    if limit is None:
        return None
    return max(min(requested, limit) * 2, floor)


def buffer_reports(requested_recv: Optional[int], requested_send: Optional[int],
                   limits: KernelLimits, granted_recv: Optional[int] = None,
                   granted_send: Optional[int] = None) -> tuple[BufferReport, BufferReport]:
    return (
        BufferReport("receive", requested_recv, granted_recv, "rmem_max",
                     limits.rmem_max, limits.rmem_default),
        BufferReport("send", requested_send, granted_send, "wmem_max",
                     limits.wmem_max, limits.wmem_default),
    )


# What a membership costs in a socket's option memory (net.core.optmem_max), roughly:
# struct ip_mc_socklist / ipv6_mc_socklist, and per SSM source one entry of the filter.
MEMBERSHIP_BYTES = 64
SOURCE_BYTES = 16


def memberships_per_socket(listener: Listener, interfaces: int) -> int:
    """Memberships one listener's socket holds: one per interface it joins on (for
    ``interface: all``, *interfaces*: those up and multicast-capable now)."""
    return max(1, interfaces) if listener.interface == ALL_INTERFACES else 1


def membership_reports(config: Config, limits: KernelLimits,
                       interfaces: int = 1) -> list[tuple[int, str]]:
    """(log level, line) for the IGMP/MLD limits against what the config joins.

    A listener has a socket of its own unless its port's listeners share one (they do only
    where their memberships fit: daemon/sharedsocket.py). Per socket, net.ipv4.igmp_max_memberships
    caps IPv4 memberships (one per interface), igmp_max_msf / mld_max_msf the SSM
    sources of one membership, and net.core.optmem_max the memory they all take.
    """
    listeners = config.listeners
    v4 = [item for item in listeners if not item.ipv6]
    v6 = [item for item in listeners if item.ipv6]
    ssm = [item for item in listeners if item.sources is not None]
    most = max(memberships_per_socket(item, interfaces) for item in listeners)
    limit = limits.igmp_max_memberships
    text = (f"IGMP/MLD: {len(listeners)} group(s) ({len(v4)} IPv4, {len(v6)} IPv6, "
            f"{len(ssm)} SSM), one socket each unless their port shares one, up to {most} "
            f"membership(s) per socket of its own; "
            f"{sysctl_name('igmp_max_memberships')} = "
            f"{limit if limit is not None else 'unknown'}")
    lines = [(logging.INFO, text)]
    needed_v4 = max((memberships_per_socket(item, interfaces) for item in v4), default=0)
    if limit is not None and needed_v4 > limit:
        lines.append(_short("igmp_max_memberships", needed_v4, limit,
                            "IPv4 memberships on one socket"))
    for family, items, name in (("IPv4", v4, "igmp_max_msf"), ("IPv6", v6, "mld_max_msf")):
        sources = max((len(item.sources or ()) for item in items), default=0)
        value = getattr(limits, name)
        if value is not None and sources > value:
            lines.append(_short(name, sources, value, f"{family} SSM sources of one group"))
    optmem = max(memberships_per_socket(item, interfaces)
                 * (MEMBERSHIP_BYTES + SOURCE_BYTES * len(item.sources or ()))
                 for item in listeners)
    if limits.optmem_max is not None and optmem > limits.optmem_max:
        lines.append(_short("optmem_max", optmem, limits.optmem_max,
                            "bytes of option memory for one socket's memberships"))
    return lines


def _short(limit: str, needed: int, value: int, what: str) -> tuple[int, str]:
    return logging.WARNING, (f"{sysctl_name(limit)} = {value} is short: the config needs "
                             f"{needed} {what}; joins will fail with ENOBUFS: fix with "
                             f"`sysctl -w {sysctl_name(limit)}={needed}`")


def mesh_reports(config: Config, limits: KernelLimits) -> list[tuple[int, str]]:
    """(log level, line) for the ARP table against the mesh's size.

    A mesh host answers each peer's probes by unicast, so it holds one ARP entry per peer.
    Past gc_thresh2 the kernel reclaims entries every few seconds (they are resolved again);
    at gc_thresh3 it makes no new one ("neighbor table overflow!"): echoes to a new peer and
    the host's own IGMP reports are dropped, and a snooping switch forgets its joins. The
    table is one per host, shared by every network namespace on it."""
    mesh = config.mesh
    soft, hard = limits.gc_thresh2, limits.gc_thresh3
    if mesh is None or mesh.expect is None or soft is None or hard is None:
        return []
    peers = mesh.expect - 1
    if peers + NEIGHBOURS_BESIDE_MESH <= soft:
        return []
    wanted = peers + NEIGHBOURS_BESIDE_MESH
    return [(logging.WARNING,
             f"mesh: {mesh.expect} hosts expected: this host keeps an ARP entry for each of "
             f"its {peers} peers, more than {sysctl_name('gc_thresh2')} = {soft} allows (the "
             f"kernel reclaims entries past it, and at {sysctl_name('gc_thresh3')} = {hard}, "
             f"one table for the whole host, drops echoes to new peers and this host's IGMP "
             f"reports): fix with `sysctl -w {sysctl_name('gc_thresh2')}={wanted} "
             f"{sysctl_name('gc_thresh3')}={max(hard, 2 * wanted)}`")]


def start_reports(config: Config, limits: KernelLimits,
                  interfaces: int = 1) -> list[tuple[int, str]]:
    """The lines a start (and check-config) gives for what the config joins and meshes."""
    return membership_reports(config, limits, interfaces) + mesh_reports(config, limits)


def predicted_reports(config: Config, limits: KernelLimits,
                      interfaces: int = 1) -> list[tuple[int, str]]:
    """Every limit line for *config* without opening a socket (check-config, limits)."""
    lines = []
    for listener in config.listeners:
        for report in buffer_reports(listener.recv_buffer, listener.send_buffer, limits):
            lines.append((report.level, f"{listener.where}: {report.message()}"))
    lines.extend(start_reports(config, limits, interfaces))
    return lines


def limits_table(limits: KernelLimits) -> list[str]:
    """`mcast-echo limits`: every sysctl that matters, with its value."""
    out = []
    for name in SYSCTLS:
        value = getattr(limits, name)
        # Not an error: a network namespace has no file for a sysctl that is not per
        # namespace (mld_max_msf), and a sandbox may hide one; the host's value applies.
        shown = "not visible here (the host's value applies)" if value is None else (
            f"{value} ({human(value)})" if name[1:5] == "mem_" else str(value))
        out.append(f"{sysctl_name(name):34} {shown}")
    return out
