"""`make demo`: two "hosts" on a veth pair in private namespaces, a daemon and a client.

Prints what a user would see: the daemon's log, then the seed-style client's
exchange. Runs in the namespace `make demo` made; nothing leaves this machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clients import echo, sender  # noqa: E402
from daemonproc import DaemonProcess  # noqa: E402
from netlab import Host, in_fresh_netns, ip, veth  # noqa: E402

GROUP, PORT = "224.3.29.71", 9999


def main() -> int:
    if not in_fresh_netns():
        print("make demo runs in a private network namespace: use `make demo`", file=sys.stderr)
        return 2
    ip("link", "set", "lo", "up")
    with Host("host-b") as responder, tempfile.TemporaryDirectory() as tmp:
        veth("eth-a", "10.88.0.1/24", responder, "eth0", "10.88.0.2/24")
        config = os.path.join(tmp, "mcast-echo.yaml")
        with open(config, "w") as f:
            f.write(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n")
        print(f"== host-b (10.88.0.2): mcast-echo serve -c {config}")
        daemon = DaemonProcess(config, host=responder)
        try:
            daemon.wait_for("ready:")
            print(daemon.log)
            print(f"\n== host-a (10.88.0.1): sending to {GROUP}:{PORT}")
            with sender("10.88.0.1") as sock:
                for payload in (b"data", b"", b"x" * 1400):
                    start = time.perf_counter()
                    reply = echo(sock, payload, GROUP, PORT)
                    took = (time.perf_counter() - start) * 1000
                    if reply is None:
                        print(f"sent {len(payload)} bytes: no reply")
                    else:
                        data, source = reply
                        shown = data if len(data) <= 16 else data[:8] + b"..."
                        print(f"sent {len(payload):5} bytes, got {len(data):5} back from "
                              f"{source[0]}:{source[1]} in {took:.3f} ms: {shown!r} "
                              f"{'(identical)' if data == payload else '(DIFFERENT)'}")
            mark = daemon.mark()
            print("\n== host-b: systemctl stop (SIGTERM)")
            daemon.stop()
            print("\n".join(daemon.lines[mark:]))
            print(f"exit status {daemon.proc.returncode}")
        finally:
            daemon.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
