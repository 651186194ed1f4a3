"""GET /probe on the metrics endpoint (issue 11): one bounded ping run as Prometheus
metrics, blackbox_exporter-style, only for groups the config serves.

The daemon runs in a netlab Host with metrics on 127.0.0.1 there; the scrapes are made
inside that host (urllib), so nothing leaves the test's namespaces.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemonproc import DaemonProcess
from netlab import Host, veth

GROUP, PORT, METRICS = "239.11.1.1", 5000, 9109

FETCH = """
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=30) as reply:
        print(json.dumps([reply.status, reply.read().decode()]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode()]))
"""


_labs = 0


@pytest.fixture
def host():
    global _labs
    _labs += 1
    local_if = f"vpr{_labs}"
    with Host("prober") as lab_host:
        veth(local_if, f"10.72.{_labs}.1/24", lab_host, "eth0", f"10.72.{_labs}.2/24")
        yield lab_host
    subprocess.run(["ip", "link", "del", local_if], capture_output=True)


def fetch(host: Host, path: str) -> tuple[int, str]:
    done = host.run(["python3", "-c", FETCH, f"http://127.0.0.1:{METRICS}{path}"], timeout=60)
    status, body = json.loads(done.stdout)
    return status, body


def serve(host: Host, write_config, probe: bool) -> DaemonProcess:
    daemon = DaemonProcess(write_config(
        f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n"
        f'metrics: {{listen: "127.0.0.1:{METRICS}", probe: {str(probe).lower()}}}\n'),
        host=host)
    daemon.wait_for("ready:")
    return daemon


def samples(text: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_a_probe_of_a_served_group_answers_with_probe_success(host, write_config):
    daemon = serve(host, write_config, probe=True)
    try:
        status, body = fetch(host, f"/probe?group={GROUP}&count=2&expect=1&spread=50")
        assert status == 200, body
        found = samples(body)
        assert found["probe_success"][0].value == 1
        assert 0 < found["probe_duration_seconds"][0].value < 10
        assert found["mcast_echo_probe_up"][0].value == 1  # the daemon answered itself
        status, body = fetch(host, f"/probe?group={GROUP}&port={PORT}&count=1&expect=2")
        assert status == 200 and samples(body)["probe_success"][0].value == 0  # 1 of 2
    finally:
        daemon.kill()


@pytest.mark.parametrize("query, status", [
    ("group=239.99.9.9", 403),  # not a group the daemon serves: never probed
    (f"group={GROUP}&port=5001", 403),
    (f"group={GROUP}&count=50", 400),
    (f"group={GROUP}&spread=256", 400),  # ping --spread's range: 0..255 ms
    ("group=not-an-address", 400),
    (f"group={GROUP}&interface=eth0;rm", 400),
    (f"group={GROUP}&evil=1", 400),
])
def test_only_bounded_probes_of_served_groups_run(host, write_config, query, status):
    daemon = serve(host, write_config, probe=True)
    try:
        assert fetch(host, f"/probe?{query}")[0] == status
    finally:
        daemon.kill()


def test_probe_is_off_unless_asked_for(host, write_config):
    daemon = serve(host, write_config, probe=False)
    try:
        status, body = fetch(host, f"/probe?group={GROUP}")
        assert status == 404 and "probe: true" in body
        assert fetch(host, "/metrics")[0] == 200
    finally:
        daemon.kill()
