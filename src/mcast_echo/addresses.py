"""Facts about addresses, each written once: which are multicast groups, which groups are
source-specific, link-scope, never routed or refused, the groups ssmping uses and asmping can
ask for, and how an address and a port are written together.

Every answer comes from ``ipaddress`` and the ranges below; nothing here imports the rest of
the package, so the config checks (schema/), ping/, daemon/ and wire/ all ask here.
"""

from __future__ import annotations

import ipaddress
from typing import Optional, Union

# Groups that a protocol on the local link (or, for 224.0.1.129 and ff0e::181, PTP across it)
# already uses (IANA "IPv4 Multicast Address Space Registry", "IPv6 Multicast Address Space
# Registry"). Joining one would echo that protocol's packets back at its speakers, so the config
# refuses them. Keys are addresses or networks of either family.
REFUSED_GROUPS: dict[str, str] = {  # group or network -> what it is, after "... is "
    "224.0.0.0": "the reserved base address of 224.0.0.0/4",
    "224.0.0.1": "the all-hosts group of the link (IGMP queries)",
    "224.0.0.2": "the all-routers group of the link",
    "224.0.0.4": "the DVMRP routers' group",
    "224.0.0.5": "the OSPF all-routers group (AllSPFRouters)",
    "224.0.0.6": "the OSPF designated-routers group (AllDRouters)",
    "224.0.0.9": "the RIPv2 routers' group",
    "224.0.0.10": "the EIGRP routers' group",
    "224.0.0.13": "the PIM routers' group",
    "224.0.0.18": "the VRRP group",
    "224.0.0.22": "the IGMPv3 membership reports group",
    "224.0.0.102": "the HSRPv2 and GLBP group",
    "224.0.0.107": "the PTP peer-delay group (IEEE 1588)",
    "224.0.0.251": "the mDNS group",
    "224.0.0.252": "the LLMNR group",
    "224.0.1.129": "the PTP group (IEEE 1588, default domain)",
    "ff01::1": "the all-nodes group of the interface",
    "ff01::2": "the all-routers group of the interface",
    "ff02::1": "the all-nodes group of the link",
    "ff02::2": "the all-routers group of the link",
    "ff05::2": "the all-routers group of the site",
    "ff02::5": "the OSPFv3 all-routers group (AllSPFRouters)",
    "ff02::6": "the OSPFv3 designated-routers group (AllDRouters)",
    "ff02::9": "the RIPng routers' group",
    "ff02::a": "the EIGRP routers' group",
    "ff02::d": "the PIM routers' group",
    "ff02::12": "the VRRP group",
    "ff02::16": "the MLDv2 membership reports group",
    "ff02::6b": "the PTP peer-delay group (IEEE 1588)",
    "ff02::fb": "the mDNS group",
    "ff02::1:2": "the DHCPv6 servers and relay agents group",
    "ff02::1:3": "the LLMNR group",
    "ff05::1:3": "the DHCPv6 servers group of the site",
    "ff02::181": "the PTP group of the link (IEEE 1588)",
    "ff0e::181": "the PTP group (IEEE 1588, global scope)",
    "ff02::1:ff00:0/104": "a solicited-node group (IPv6 neighbor discovery)",
}
_REFUSED_NETWORKS = tuple((ipaddress.ip_network(net), what) for net, what in REFUSED_GROUPS.items())
MULTICAST_RANGES = {4: "224.0.0.0/4", 6: "ff00::/8"}  # IP version -> every group of it
# IP version -> where a private group is taken from: IPv4's administratively scoped groups
# (RFC 2365), IPv6's transient groups of site scope (RFC 4291); and one example of each.
PRIVATE_RANGES = {4: "239.0.0.0/8", 6: "ff15::/16"}
PRIVATE_GROUPS = {4: f"{PRIVATE_RANGES[4]}, e.g. 239.255.10.1",
                  6: f"{PRIVATE_RANGES[6]}, e.g. ff15::1234"}
# Source-specific multicast (RFC 4607 section 1): 232.0.0.0/8, and FF3x::/32 for every scope x
# (RFC 3306 section 6: flags P=1 T=1 with a prefix length of 0). Other ff3x: groups carry a
# unicast prefix (ff3e:40:2001:db8::...) and are any-source.
SSM_V4 = ipaddress.IPv4Network("232.0.0.0/8")
LOCAL_NETWORK_CONTROL = ipaddress.IPv4Network("224.0.0.0/24")  # never forwarded
BROADCAST = ipaddress.IPv4Address("255.255.255.255")  # never a sender, nor a place to listen
SSM_RANGES = "232.0.0.0/8, ff3x::/32"


def refused_group(group: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> Optional[str]:
    """What *group* is, if it is one the config refuses (IPv4 or IPv6); else None."""
    for network, what in _REFUSED_NETWORKS:
        if group in network:
            return what
    return None


AnyAddress = Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]


# An IPv4-mapped IPv6 address (::ffff:239.1.1.1) is asked about before any is_* test: from
# Python 3.13 ipaddress answers is_multicast, is_loopback, ... for the IPv4 address inside
# it, while the kernel takes it for an IPv6 address that is never a group. The answers
# below are the same on every Python.
def is_ipv4_mapped(addr: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> bool:
    """::ffff:a.b.c.d."""
    return addr.version == 6 and addr.ipv4_mapped is not None


def is_multicast(addr: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> bool:
    """A multicast group (224.0.0.0/4, ff00::/8); an IPv4-mapped address never is."""
    return not is_ipv4_mapped(addr) and addr.is_multicast


def needs_zone(address: str) -> bool:
    """An IPv6 link-local unicast address (fe80::/10), which a socket binds with its
    interface; an IPv4-mapped address never is one."""
    addr = ipaddress.IPv6Address(address.split("%", 1)[0])
    return not is_ipv4_mapped(addr) and addr.is_link_local


def not_a_group(addr: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> str:
    """What to say of an address that is not a group, with the IPv4 one a mapped address holds."""
    if is_ipv4_mapped(addr):
        assert isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None
        inside = addr.ipv4_mapped
        return (f"::ffff:{inside} is an IPv4-mapped IPv6 address, not a multicast group"
                + (f" (write {inside})" if inside.is_multicast else ""))
    return f"{addr} is not a multicast address"


def is_ssm_group(group: AnyAddress) -> bool:
    """In 232.0.0.0/8 or in ff3x::/32 (any scope x); *group* is an address or its text."""
    group = ipaddress.ip_address(group)
    if group.version == 4:
        return group in SSM_V4
    return int(group) >> 116 == 0xFF3 and (int(group) >> 96) & 0xFFFF == 0


def ipv6_scope(group: ipaddress.IPv6Address) -> int:
    """The scope field of an IPv6 group, the low four bits of its second byte (RFC 4291
    section 2.7, RFC 7346): 1 interface, 2 link, 5 site, 0xe global; 0 and 0xf reserved."""
    return (int(group) >> 112) & 0xF


def is_link_scope_group(group: AnyAddress) -> bool:
    """An IPv6 group of interface- or link-local scope (ff01::/16, ff02::/16 and the
    flagged forms such as ff12:: or ff32::); *group* is an address or its text."""
    group = ipaddress.ip_address(group)
    return group.version == 6 and is_multicast(group) and ipv6_scope(group) in (1, 2)


def is_never_routed_group(group: AnyAddress) -> bool:
    """A group no router forwards, whatever the TTL: IPv4's Local Network Control Block
    224.0.0.0/24 (RFC 5771) or an IPv6 link-scope group (is_link_scope_group)."""
    group = ipaddress.ip_address(group)
    if group.version == 4:
        return group in LOCAL_NETWORK_CONTROL
    return is_link_scope_group(group)


# ssmping's group when given none, and ssmpingd's when a request names none: one of each
# family, both source-specific. mcast-echo's `ssmping: groups:` defaults to them.
SSMPING_GROUP_V4 = "232.43.211.234"
SSMPING_GROUP_V6 = "ff3e::4321:1234"
SSMPING_GROUPS = (SSMPING_GROUP_V4, SSMPING_GROUP_V6)
ASMPING_GROUPS = "a group ending in .234 (IPv4) or ::4321:1234 (IPv6)"  # asmping_can_ask, said


def asmping_can_ask(group: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> bool:
    """Whether Debian's asmping can ask for *group*: it takes only a group ending in .234
    (IPv4) or ::4321:1234 (IPv6), as ssmpingd answers only those."""
    if group.version == 4:
        return group.packed[-1] == 234
    return group.packed[-4:] == bytes.fromhex("43211234")


def host_port(address: str, port: int) -> str:
    """*address* and *port* as one text, an IPv6 address in brackets so that its colons are
    not read as the port's: 224.3.29.71:9999, [ff15::1]:9999, [fe80::1%eth0]:4321."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
