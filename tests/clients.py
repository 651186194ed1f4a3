"""Plain sockets, as the seed had them: a client that sends to the group and reads the echo,
and the seed's echo server (PLAIN_ECHO_SERVER, a script to run on another host)."""

from __future__ import annotations

import socket
import textwrap
from typing import Optional

# The seed's server: bind the port, join, echo each datagram back with recvfrom/sendto.
PLAIN_ECHO_SERVER = textwrap.dedent("""
    import socket, struct, sys
    group, port = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", port))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    struct.pack("4sl", socket.inet_aton(group), socket.INADDR_ANY))
    print("ready", flush=True)
    while True:
        data, address = sock.recvfrom(65535)
        sock.sendto(data, address)
""")


def sender(local_addr: str, ttl: int = 1, timeout: float = 2.0) -> socket.socket:
    """A UDP socket that sends multicast out of the interface holding *local_addr*."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local_addr))
    sock.bind((local_addr, 0))
    sock.settimeout(timeout)
    return sock


def echo(sock: socket.socket, payload: bytes, group: str, port: int,
         timeout: Optional[float] = None) -> Optional[tuple[bytes, tuple[str, int]]]:
    """Send *payload* to the group; the first reply, or None if none came in time."""
    if timeout is not None:
        sock.settimeout(timeout)
    sock.sendto(payload, (group, port))
    try:
        return sock.recvfrom(65535)
    except socket.timeout:
        return None


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65535)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
