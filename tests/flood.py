"""One full-speed sender: datagrams to a group from one source address, echoes counted.

Run as a process (so several can flood at once, on both CPUs); bounded by --count
and --seconds. Prints one JSON line: sent, send_errors, echoes, echoed_bytes,
bad_echoes (an echo that is not byte-identical to something we sent), seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import sys
import time

from mcast_echo.wire import probe

BURST = 32  # datagrams between two looks at the echoes


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", required=True, help="local address to send from")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sizes", default="64", help="comma-separated payload sizes, cycled")
    parser.add_argument("--no-read", action="store_true", help="never read the echoes")
    parser.add_argument("--probes", action="store_true",
                        help="every 16th datagram is a probe that asks for a trailer")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(os.getpid())
    payloads = [rng.randbytes(size) for size in sizes]
    session = rng.getrandbits(32)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.source))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((args.source, 0))
    sock.setblocking(False)
    known = {p for p in payloads}

    sent = send_errors = echoes = echoed_bytes = bad = probes_sent = trailers = 0
    start = time.monotonic()
    deadline = start + args.seconds
    index = 0
    while sent < args.count:
        if time.monotonic() >= deadline:
            break
        for _ in range(BURST):
            if args.probes and sent % 16 == 0:
                payload = probe.build_probe(session, sent, time.time_ns(), 64)
                probes_sent += 1
            else:
                payload = payloads[index % len(payloads)]
                index += 1
            try:
                sock.sendto(payload, (args.group, args.port))
                sent += 1
            except (BlockingIOError, OSError):
                send_errors += 1
        if args.no_read:
            continue
        try:
            while True:
                data = sock.recv(65535)
                echoes += 1
                echoed_bytes += len(data)
                if data not in known:
                    checked = probe.check_echo(data, session)
                    if checked is None or not checked.intact:
                        bad += 1
                    elif checked.trailer is not None:
                        trailers += 1
        except BlockingIOError:
            pass
    # a last look for echoes still on their way
    linger = time.monotonic() + (0 if args.no_read else 0.3)
    while (time.monotonic() < linger
           and select.select([sock], [], [], max(0.0, linger - time.monotonic()))[0]):
        data = sock.recv(65535)
        echoes += 1
        echoed_bytes += len(data)
    seconds = min(time.monotonic(), deadline) - start
    print(json.dumps({"sent": sent, "send_errors": send_errors, "echoes": echoes,
                      "echoed_bytes": echoed_bytes, "bad_echoes": bad, "probes": probes_sent,
                      "trailers": trailers, "seconds": round(seconds, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
