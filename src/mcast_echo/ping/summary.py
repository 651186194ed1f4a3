"""The end of a run: the statistics, the hints when nobody answered, the JSON document.

Everything here is a pure function of what the run learnt (tally.py's table and
counts) and of its settings: the pinger prints what these return.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..addresses import is_never_routed_group, refused_group
from ..schema.policy import RateLimit
from .display import plural
from .settings import Settings
from .tally import ResponderTable, RunCounts

DEFAULT_RATE = RateLimit.rate  # a responder's default rate_limit per source, datagrams/s


def statistics(target: str, table: ResponderTable, counts: RunCounts, expect: int,
               title: str = "mcast-echo ping") -> list[str]:
    """`--- GROUP:PORT mcast-echo ping statistics ---`, a line per responder (per path for
    ssmping and RFC 6450), the tail."""
    transmitted = counts.transmitted
    lines = [f"--- {target} {title} statistics ---"]
    lines.extend(line for s in table.in_order() for line in s.summary_lines(transmitted))
    count = table.answered()
    tail = f"{plural(transmitted, 'probe')} transmitted, {plural(count, 'responder')}"
    if count < expect:
        tail += f" (expected at least {expect})"
    local = table.local()
    if local:
        tail += (f", {plural(len(local), 'local responder')} (this host's own: not "
                 "counted)")
    group_lost = table.group_lost()
    if group_lost:
        tail += (f", {len(group_lost)} whose echoes to the group never arrived "
                 "(not counted)")
    if table.wrong_port():
        tail += (f", {table.wrong_port()} from a source port other than {table.group_port} "
                 "(not counted)")
    if table.untracked_echoes:
        tail += (f", {plural(table.untracked_echoes, 'echo', 'echoes')} from sources past "
                 f"the first {table.limit} not tracked")
    if counts.send_errors:
        tail += f", {plural(counts.send_errors, 'send error')}"
    if counts.stray:
        tail += f", {plural(counts.stray, 'stray datagram')} ignored"
    if counts.late:
        tail += f", {plural(counts.late, 'echo', 'echoes')} too late to match"
    lines.append(tail)
    return lines


def rate_note(settings: Settings, table: ResponderTable, transmitted: int) -> list[str]:
    """A note when probes go faster than a responder's default rate limit and it lost some."""
    if settings.interval >= 1 / DEFAULT_RATE:
        return []
    if not any(s.received < transmitted for s in table):
        return []
    rate = "as fast as possible" if settings.interval == 0 else \
        f"{1 / settings.interval:,.0f}/s"
    return [f"probes went {rate}, faster than a responder's default rate limit of "
            f"{DEFAULT_RATE:,.0f}/s per source (`rate_limit` in its config): the loss may be "
            "that limit, not the network; -i 0.001 or slower stays under it"]


def hints(settings: Settings, path_text: str, table: ResponderTable,
          counts: RunCounts) -> list[str]:
    """What to check when probes went out and no responder counted: only this host's own
    answered, group echoes were lost, or nobody answered at all. None with --expect 0: the
    run asked for no responder (e.g. to look at the local one alone)."""
    if counts.transmitted == 0 or table.answered() > 0 or settings.expect == 0:
        return []
    s = settings
    found = []
    local = table.local()
    if local:
        found.append(f"local: only this host's own responder answered ({local[0].address}), "
                     "over loopback: it proves nothing about the network and is not counted. "
                     "Does this host get the group's multicast (its switch port, IGMP "
                     "snooping, a querier on the LAN)?")
    group_lost = table.group_lost()
    if group_lost:
        found.append(f"group: {group_lost[0].address} answered by unicast, but none of its "
                     f"echoes to {s.group} arrived: multicast from it does not reach this "
                     "host (IGMP snooping, a firewall, its ttl)")
    reserved = refused_group(ipaddress.ip_address(s.group)) if s.group else None
    if reserved is not None:
        found.append(f"group: {s.group} is {reserved}: a responder's config refuses it "
                     "(mcast-echo check-config says why), so none serves it; probe the group "
                     "they serve")
    if s.interface:
        found.append(f"route: probes left through -I {s.interface}, {path_text}: is that the "
                     "responders' link?")
    else:
        found.append(f"route: probes followed the route to {s.group}, out of {path_text}: "
                     "if the responders are on another link, pass -I IFACE")
    ttl = f"ttl: {s.ttl} (from {s.ttl_from})" if s.ttl_from else f"ttl: -t {s.ttl}"
    if is_never_routed_group(s.group):
        found.append(f"ttl: {s.group} is link-local: no router forwards it, whatever the TTL; "
                     "responders must be on the link the probes leave by")
    elif s.ttl == 0:
        found.append(f"{ttl} keeps probes on this host" + (
            "; pass -t 1 or more" if s.ttl_from else ""))
    elif s.ttl == 1:
        found.append(f"{ttl} stays on this link; responders behind a multicast router "
                     "need -t 2 or more")
    found.append(f"port: responders must serve {s.group} on port {s.port} (their `group:` and "
                 "`port:`; mcast-echo check-config shows them)")
    found.append(f"firewall: UDP to {s.group} port {s.port} must leave here and reach them, "
                 f"and UDP from port {s.port} must come back in")
    found.append(f"allow: a responder whose `allow:` leaves out the address the probes come "
                 f"from ({path_text}) drops them (its log says \"source not in 'allow'\")")
    if not s.loopback:
        found.append("loopback: --no-loopback: a responder on this host does not hear the "
                     "probes")
    if s.ssm and not s.source:
        found.append(f"source: {s.group} is source-specific: responders answer only the "
                     "sources in their `sources:`; pass -S SOURCE")
    return found


def json_document(settings: Settings, session: int, table: ResponderTable, counts: RunCounts,
                  duration_s: float, path_text: str, group_echoes: bool,
                  notes: list[str], found_hints: list[str]) -> dict[str, Any]:
    count = table.answered()
    return {
        "settings": {**settings.for_json(), "session": f"{session:08x}"},
        "ok": count >= settings.expect,
        "sent_from": path_text,
        "group_echoes_heard": group_echoes,
        "transmitted": counts.transmitted,
        "send_errors": counts.send_errors,
        "stray_datagrams": counts.stray,
        "late_echoes": counts.late,
        "duration_s": round(duration_s, 3),
        "responders": [s.to_json(counts.transmitted) for s in table.in_order()],
        "responder_count": count,
        "local_responders": len(table.local()),
        "group_lost_responders": len(table.group_lost()),
        "wrong_source_port_responders": table.wrong_port(),
        "responder_limit": table.limit,
        "untracked_echoes": table.untracked_echoes,
        "expect": settings.expect,
        "notes": notes,
        "hints": found_hints,
    }
