"""An echo is never larger than the datagram it answers (issue 12, item 2).

Reported: a 32-byte probe asking for the identity trailer came back as 66 bytes with a
one-letter host name and 131 bytes with a 64-character one (4.09x). Now the trailer is
written over the room the probe reserves (docs/protocol.md), so reply bytes / request
bytes is 1.0 for every datagram, whatever the host name.
"""

from __future__ import annotations

import time

from clients import sender
from daemonproc import DaemonProcess
from mcast_echo.wire import probe
from netlab import Host, unplug, veth

GROUP = "224.3.29.71"
PORT = 9999
LONGEST_HOSTNAME = "h" * 64  # Linux's limit


def test_no_reply_is_larger_than_its_request_even_with_a_64_character_host_name(write_config):
    with Host(LONGEST_HOSTNAME) as host:
        veth("vamp0", "10.67.0.1/24", host, "eth0", "10.67.0.2/24")
        daemon = DaemonProcess(write_config("interface: eth0\nrate_limit: off\n"), host=host)
        try:
            daemon.wait_for("ready:")
            requests = [probe.build_probe(7, seq, time.time_ns(), size, flags=flags)
                        for seq, (size, flags) in enumerate(
                            (size, flags) for size in (32, 33, 51, 52, 64, 100, 128, 1400, 9000)
                            for flags in (probe.FLAG_WANT_TRAILER, probe.FLAG_LEGACY_TRAILER,
                                          probe.FLAG_WANT_TRAILER | probe.FLAG_LEGACY_TRAILER))]
            requests += [b"", b"x", b"MCEP", b"data"]
            sent = received = 0
            with_trailer = []
            with sender("10.67.0.1") as sock:
                for request in requests:
                    sock.sendto(request, (GROUP, PORT))
                    reply = sock.recv(65535)
                    assert len(reply) == len(request), (len(request), len(reply), reply[:40])
                    sent += len(request)
                    received += len(reply)
                    echo = probe.check_echo(reply, 7)
                    if echo is not None and echo.trailer is not None:
                        assert echo.intact
                        with_trailer.append((len(request), echo.trailer.hostname))
            factor = received / sent
            print(f"amplification: {received} reply bytes / {sent} request bytes = {factor:.3f}; "
                  f"trailers (probe size, host name shown): "
                  f"{[(n, len(h)) for n, h in with_trailer]}")
            assert factor == 1.0
            sizes = {size for size, _ in with_trailer}
            assert sizes == {52, 64, 100, 128, 1400, 9000}, sizes  # 0x02 and room for one
            assert ("h" * 64) in {name for _, name in with_trailer}  # whole when it fits
        finally:
            daemon.kill()
            unplug("vamp0")
