"""A minimal static multicast router for tests: forwards one (source, group) between two interfaces.

Run inside a netlab Host as ``python mroute.py SOURCE GROUP IN_IF OUT_IF``. It does
what smcroute would with one static route, through the kernel's multicast routing
API (linux/mroute.h): MRT_INIT, one VIF per interface, one MFC entry. The entries
live as long as this process keeps its socket open; it prints "routing" when set.
A test asks ``missing()`` first: a kernel built without CONFIG_IP_MROUTE has no
multicast routing (MRT_INIT fails with ENOPROTOOPT), and the test skips with the reason.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys

MRT_INIT, MRT_ADD_VIF, MRT_ADD_MFC = 200, 202, 204
VIFF_USE_IFINDEX = 0x8
MAXVIFS = 32


def missing() -> str | None:
    """Why this kernel cannot route multicast (None when it can): MRT_INIT in this namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP) as sock:
        try:
            sock.setsockopt(socket.IPPROTO_IP, MRT_INIT, 1)
        except OSError as error:
            if error.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                return (f"the kernel has no multicast routing (MRT_INIT: "
                        f"{errno.errorcode[error.errno]}; CONFIG_IP_MROUTE is off)")
            raise
    return None


def vifctl(vifi: int, ifindex: int) -> bytes:
    """struct vifctl: vifi, flags, threshold, rate limit, lcl (ifindex here), rmt addr."""
    return struct.pack("@HBBIi4s", vifi, VIFF_USE_IFINDEX, 1, 0, ifindex, bytes(4))


def mfcctl(source: str, group: str, parent: int, ttls: dict[int, int]) -> bytes:
    """struct mfcctl: origin, group, parent vif, per-vif TTL thresholds, counters, expire."""
    thresholds = bytes(ttls.get(vif, 0) for vif in range(MAXVIFS))
    return struct.pack("@4s4sH32sIIIi", socket.inet_aton(source), socket.inet_aton(group),
                       parent, thresholds, 0, 0, 0, 0)


def main(source: str, group: str, in_if: str, out_if: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP)
    sock.setsockopt(socket.IPPROTO_IP, MRT_INIT, 1)
    for vifi, name in enumerate((in_if, out_if)):
        sock.setsockopt(socket.IPPROTO_IP, MRT_ADD_VIF, vifctl(vifi, socket.if_nametoindex(name)))
    # Forward what arrives on VIF 0 out of VIF 1 when its TTL is above 1; the kernel
    # decrements the TTL on the way, as any router does.
    sock.setsockopt(socket.IPPROTO_IP, MRT_ADD_MFC, mfcctl(source, group, 0, {1: 1}))
    print("routing", flush=True)
    while sock.recv(65535):  # the kernel's upcalls (unresolved routes): nothing to do
        pass


if __name__ == "__main__":
    main(*sys.argv[1:5])
