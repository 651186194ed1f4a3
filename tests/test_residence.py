"""How long the daemon holds a probe (issue 19.4): the residence-time histogram in /metrics
and its p50/p99 in STATUS, counted for probes only."""

from __future__ import annotations

import subprocess
import sys

from daemonproc import DaemonProcess
from mcast_echo.daemon.residence import BUCKETS, ResidenceHistogram
from test_metrics import lo_sender, scrape_until, value

GROUP, PORT, LISTEN = "224.3.29.71", 9999, "127.0.0.1:9107"
LABELS = dict(group=GROUP, port=str(PORT), interface="lo")


def test_quantiles_interpolate_within_their_bucket():
    histogram = ResidenceHistogram()
    assert histogram.quantile(0.5) is None and histogram.status() == ""
    for residence_us in (20, 20, 30, 40, 2_000_000):  # 2 s: past the last bound
        histogram.observe(residence_us * 1000)
    assert histogram.count == 5 and histogram.sum_ns == 2_000_110_000
    assert histogram.cumulative()[-1] == ("+Inf", 5)
    assert dict(histogram.cumulative())["2.5e-05"] == 2
    assert 25e-6 <= histogram.quantile(0.5) <= 50e-6  # the third of five: in (25, 50] µs
    assert histogram.quantile(0.99) == BUCKETS[-1]
    assert histogram.status() == "residence p50 31 µs, p99 1000.0 ms (5 probes)"


def test_probes_and_only_probes_are_counted_in_metrics_and_status(write_config):
    config = write_config(f"interface: lo\nstatus_interval: 1\n"
                          f"metrics: {{listen: \"{LISTEN}\"}}\n")
    with DaemonProcess(config, args=("--log-level", "debug")) as daemon:
        daemon.wait_for("ready:")
        with lo_sender() as sock:
            for n in range(3):  # plain datagrams: echoed, never timed
                sock.sendto(b"plain %d" % n, (GROUP, PORT))
                assert sock.recv(100) == b"plain %d" % n
        done = subprocess.run([sys.executable, "-m", "mcast_echo", "ping", "-n", "-I", "lo",
                               "-c", "5", "-i", "0.05", "-W", "1", f"{GROUP}:{PORT}"],
                              capture_output=True, text=True, timeout=30)
        assert "5 received, 0% loss" in done.stdout, done.stdout + done.stderr
        series = scrape_until(LISTEN, lambda s: value(
            s, "mcast_echo_residence_seconds_count", **LABELS) == 5)
        assert value(series, "mcast_echo_residence_seconds_count", **LABELS) == 5
        assert value(series, "mcast_echo_received_datagrams_total", **LABELS) == 8
        assert 0 < value(series, "mcast_echo_residence_seconds_sum", **LABELS) < 5
        assert value(series, "mcast_echo_residence_seconds_bucket", **LABELS, le="+Inf") == 5
        line = daemon.wait_for("residence p50 ", timeout=5)
        assert "(5 probes)" in line and " p99 " in line, line


def test_no_probe_no_residence_in_status(write_config):
    config = write_config("interface: lo\nstatus_interval: 1\n")
    with DaemonProcess(config, args=("--log-level", "debug")) as daemon:
        daemon.wait_for("ready:")
        with lo_sender() as sock:
            sock.sendto(b"plain", (GROUP, PORT))
            assert sock.recv(100) == b"plain"
        line = daemon.wait_for("status: 224.3.29.71:9999 on lo: received 1", timeout=5)
        assert "residence" not in line
