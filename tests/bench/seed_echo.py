"""The plain Python echo loop the project grew from, as `make bench` runs it.

Bound to INADDR_ANY:port with SO_REUSEADDR, joined to the group on one interface,
every datagram sent back to its sender with recvfrom/sendto. Unlike the seed, an empty
datagram does not stop it (SIGTERM does), and it reads up to 65,535 bytes, so the
1,400-byte run echoes whole datagrams.

    python3 seed_echo.py GROUP PORT IFNAME
"""

from __future__ import annotations

import socket
import struct
import sys


def main() -> int:
    group, port, ifname = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", port))
    # struct ip_mreqn: group, local address (any), interface index
    mreq = struct.pack("4s4si", socket.inet_aton(group), bytes(4), socket.if_nametoindex(ifname))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    print(f"seed_echo: ready: {group}:{port} on {ifname}", file=sys.stderr, flush=True)
    while True:
        data, address = sock.recvfrom(65535)
        sock.sendto(data, address)


if __name__ == "__main__":
    sys.exit(main())
