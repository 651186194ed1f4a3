"""errno -> what to tell the user: the only place those words live.

Two tables, one per kind of failure. ``JOIN_ERRORS``: a membership of the daemon's
failed; the fix is a config key or a sysctl (``join_error_text``). ``PING_ERRORS``: a
setsockopt, bind, connect or send of `mcast-echo ping` failed; the fix is an option,
worded for what was pinged, a group or one host (``ping_error_text``). An errno
without a line in the table is shown in the kernel's words.
"""

from __future__ import annotations

import errno
from typing import Optional

ROUTE_FIX = "add a multicast route (ip route add 224.0.0.0/4 dev IFACE)"
ROUTE_FIX_IPV6 = "add a multicast route (ip -6 route add ff00::/8 dev IFACE table local)"

JOIN_ERRORS: dict[int, str] = {
    errno.ENODEV: f"no such device, or no route to the group: {ROUTE_FIX} or set 'interface'",
    errno.EADDRNOTAVAIL: "the interface has no such address: set 'interface' to a name or "
                         "to an address of this host",
    errno.ENOBUFS: "too many memberships or sources: raise net.ipv4.igmp_max_memberships "
                   "(IPv4) or net.core.optmem_max, and for SSM net.ipv4.igmp_max_msf / "
                   "net.ipv6.mld_max_msf (sysctl -w NAME=...)",
    errno.EADDRINUSE: "this socket is already a member of the group",
    errno.EINVAL: "the kernel refused the membership (is the address a multicast group?)",
    errno.ENETDOWN: "the interface is down",
}


def join_error_text(error: OSError) -> str:
    """The operator's line for a failed join: the table's fix, or the kernel's words."""
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    return f"{name}: {JOIN_ERRORS.get(error.errno or 0, error.strerror or str(error))}"


_REFUSED = "sending to {target} was refused: is a firewall rule dropping it?"
_NOT_LOCAL = ("{address_option} is not an {family} address of this host: "
              "pass one of its addresses{or_name}")

# errno -> (the line when pinging a group, the line when pinging one host); None: the
# kernel's words. {target} is the group or the host; {via} " via IFACE" or "".
PING_ERRORS: dict[int, tuple[Optional[str], Optional[str]]] = {
    errno.ENETUNREACH: ("no route to {target}: {route_fix} or pass -I IFACE",
                        "no route to {target}: add a route, or check the address"),
    errno.ENODEV: ("no usable interface for {target}{via}: it is missing or down; "
                   "pass -I with an interface that is up, or add a multicast route", None),
    errno.EADDRNOTAVAIL: (_NOT_LOCAL, _NOT_LOCAL),
    errno.EPERM: (_REFUSED, _REFUSED),
    errno.EACCES: (_REFUSED, _REFUSED),
    errno.EMSGSIZE: ("{size}-byte probes are too large for this path: lower -s", None),
    errno.EHOSTUNREACH: ("{target} is unreachable{via}: check the interface and its routes",
                         "{target} is unreachable: check the address and the route"),
    errno.EINVAL: ("{target}{via}: the kernel refused it (a link-scope group needs -I IFACE)",
                   "{target}: the kernel refused it (a link-local address needs %IFACE or -I)"),
}


def ping_error_text(err: OSError, *, of_host: bool, target: str, shown: str, ipv6: bool,
                    interface: Optional[str], source: Optional[str], size: int = 0) -> str:
    """One line for an OSError of ping's: what failed, and the fix. *target* is the group
    pinged, or the host (*of_host*); *shown* what the user typed, for the kernel's words;
    *interface* and *source* are -I and -S."""
    template = PING_ERRORS.get(err.errno or 0, (None, None))[of_host]
    name = errno.errorcode.get(err.errno or 0, "error")
    if template is None or (template is _NOT_LOCAL and not source and not interface):
        return f"{shown}: {err.strerror or err} ({name})"  # no -S or -I to name: the kernel's
    if source:
        address_option, or_name = f"-S {source}", ""
    else:
        address_option, or_name = f"-I {interface}", " or an interface name"
    return template.format(
        target=target, via=f" via {interface}" if interface else "", size=size,
        address_option=address_option, or_name=or_name, family="IPv6" if ipv6 else "IPv4",
        route_fix=ROUTE_FIX_IPV6 if ipv6 else ROUTE_FIX) + f" ({name})"
