"""Plain-socket clients, as the seed's client was: send to the group, read the echo."""

from __future__ import annotations

import socket
from typing import Optional


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
