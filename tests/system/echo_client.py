"""A client as an admin would use one: send datagrams to a group, wait for the echoes.

Runs inside the system-test container under Debian's /usr/bin/python3 (standard library only):
    python3 echo_client.py GROUP PORT --source ADDR [--sizes 0,1400] [--timeout 2]
Prints one JSON object: {"sent": N, "echoed": N, "from": [[addr, port], ...]}.
The echo must come back byte for byte; anything else does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time


def probe(group: str, port: int, source: str, size: int, timeout: float) -> tuple | None:
    """Send one datagram of *size* bytes; the responder's address if it echoed it intact."""
    payload = os.urandom(size)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        # the sender's address picks the interface: multicast otherwise leaves by the route
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.sendto(payload, (group, port))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, peer = sock.recvfrom(65535)
            except socket.timeout:
                break
            if data == payload:
                return peer
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("group")
    parser.add_argument("port", type=int)
    parser.add_argument("--source", required=True, help="this host's address on the link")
    parser.add_argument("--sizes", default="0,1,1400", help="datagram sizes, comma-separated")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait per echo")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    responders = [probe(args.group, args.port, args.source, size, args.timeout) for size in sizes]
    echoed = [peer for peer in responders if peer is not None]
    print(json.dumps({"sent": len(sizes), "echoed": len(echoed), "from": echoed}))


if __name__ == "__main__":
    main()
