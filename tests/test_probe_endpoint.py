"""GET /probe on the metrics endpoint (issue 11): one bounded ping run as Prometheus
metrics, blackbox_exporter-style, only for groups the config serves.

The daemon runs in a netlab Host with metrics on 127.0.0.1 there; the scrapes are made
inside that host (urllib), so nothing leaves the test's namespaces.
"""

from __future__ import annotations

import json
import signal
import threading
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemonproc import DaemonProcess
from mcast_echo.daemon import prober as prober_module
from mcast_echo.daemon.prober import BURST, MAX_CONCURRENT, Prober, Refused
from mcast_echo.schema import Listener
from netlab import Host, cabled_host

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
    with cabled_host("prober", local_if, f"10.72.{_labs}") as lab_host:
        lab_host.link = local_if  # the test's end of the cable: another host's interface
        lab_host.link_peer = f"10.72.{_labs}.1"
        yield lab_host


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


def test_a_probe_of_a_served_group_answers_with_probe_success(host, write_config, tmp_path):
    """The prober's own daemon is local and never counts: the responder on the other end
    of the cable (the test's namespace) is the one that makes the probe succeed."""
    daemon = serve(host, write_config, probe=True)
    other_config = tmp_path / "other.yaml"
    other_config.write_text(f"group: {GROUP}\nport: {PORT}\ninterface: {host.link}\n")
    other = DaemonProcess(other_config)
    try:
        other.wait_for("ready:")
        status, body = fetch(host, f"/probe?group={GROUP}&count=2&expect=1&spread=50")
        assert status == 200, body
        found = samples(body)
        assert found["probe_success"][0].value == 1
        assert 0 < found["probe_duration_seconds"][0].value < 10
        [up] = found["mcast_echo_probe_up"]  # the other host's; none for the prober itself
        assert (up.labels["responder"], up.value) == (host.link_peer, 1)
        assert found["mcast_echo_probe_local_responders"][0].value == 1
        status, body = fetch(host, f"/probe?group={GROUP}&port={PORT}&count=1&expect=2")
        assert status == 200 and samples(body)["probe_success"][0].value == 0  # 1 of 2
    finally:
        other.kill()
        daemon.kill()


@pytest.mark.parametrize("query, status", [
    ("group=239.99.9.9", 403),  # not a group the daemon serves: never probed
    (f"group={GROUP}&port=5001", 403),
    (f"group={GROUP}&count=50", 400),
    (f"group={GROUP}&spread=256", 400),  # ping --spread's range: 0..255 ms
    ("group=not-an-address", 400),
    (f"group={GROUP}&interface=eth0;rm", 400),
    (f"group={GROUP}&evil=1", 400),
    # #18.4: refused before any probe starts, not a probe that fails
    (f"group={GROUP}&interface=eth9", 400),  # no such interface here
    (f"group={GROUP}&interface=10.9.9.9", 400),  # no address of this host
    (f"group={GROUP}" + "&count=1" * 8, 400),  # 9 fields: was a traceback per request
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


# Many bad requests at once, from one client (the HTTP statuses, in order).
FLOOD = """
import sys, urllib.error, urllib.request
statuses = []
for n in range(int(sys.argv[2])):
    try:
        with urllib.request.urlopen(sys.argv[1] + ("&interface=eth9" if n % 2 else
                                    "&count=1" * 8), timeout=10) as reply:
            statuses.append(reply.status)
    except urllib.error.HTTPError as e:
        statuses.append(e.code)
print(" ".join(map(str, statuses)))
"""


def test_bad_probes_are_refused_before_a_probe_starts_and_log_nothing(host, write_config):
    """#18.4: 200 bad /probe requests (a missing interface, 9 query fields) are 400s with a
    one-line reason; no ping process runs for them and the daemon logs no line for them
    (was: a failing ping per request and a traceback per request)."""
    daemon = serve(host, write_config, probe=True)
    try:
        mark = daemon.mark()
        status, body = fetch(host, f"/probe?group={GROUP}&interface=eth9")
        assert (status, body) == (400, "interface=eth9 is neither an interface nor an address "
                                       "of this host\n")
        status, body = fetch(host, f"/probe?group={GROUP}" + "&count=1" * 8)
        assert (status, body) == (400, "more than 8 query fields\n")
        done = host.run(["python3", "-c", FLOOD,
                         f"http://127.0.0.1:{METRICS}/probe?group={GROUP}", "200"], timeout=120)
        assert done.stdout.split() == ["400"] * 200
        assert fetch(host, "/metrics")[0] == 200
        assert daemon.lines[mark:] == []
    finally:
        daemon.kill()


def test_a_reload_that_turns_probe_on_serves_probe_on_the_same_address(host, write_config):
    """#18.11: probe: false -> true on the same listen address (the socket stays) turns
    /probe on; back to false turns it off."""
    daemon = serve(host, write_config, probe=False)
    try:
        assert fetch(host, "/probe?group=239.99.9.9")[0] == 404
        for probe, status in ((True, 403), (False, 404)):
            write_config(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n"
                         f'metrics: {{listen: "127.0.0.1:{METRICS}", '
                         f"probe: {str(probe).lower()}}}\n")
            mark = daemon.mark()
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("reloaded:", start=mark)
            assert fetch(host, "/probe?group=239.99.9.9")[0] == status  # 403: a prober said no
    finally:
        daemon.kill()


# --- the limits, on the Prober itself, with ping replaced by a stand-in ------------------

@pytest.fixture
def quick_ping(monkeypatch):
    """ping runs as a process; here it returns at once, or when *release* is set."""
    release = threading.Event()
    release.set()
    started = []

    def run(command, **_):
        started.append(command)
        release.wait(10)
        return SimpleNamespace(returncode=0, stderr=b"")

    monkeypatch.setattr(prober_module.subprocess, "run", run)
    return SimpleNamespace(release=release, started=started)


def test_probes_are_rate_limited_with_retry_after(quick_ping):
    prober = Prober(lambda: (Listener(group=GROUP, port=PORT),))
    request = prober.request(f"group={GROUP}&count=1")
    for _ in range(BURST):
        assert b"probe_success 1" in prober.run(request)
    with pytest.raises(Refused) as refused:
        prober.run(request)
    assert refused.value.status.startswith("429") and refused.value.retry_after == 1
    assert len(quick_ping.started) == BURST  # the refused one started nothing


def test_probes_are_concurrency_capped_with_retry_after(quick_ping):
    prober = Prober(lambda: (Listener(group=GROUP, port=PORT),))
    request = prober.request(f"group={GROUP}&count=1")
    quick_ping.release.clear()
    running = [threading.Thread(target=prober.run, args=(request,))
               for _ in range(MAX_CONCURRENT)]
    for thread in running:
        thread.start()
    try:
        with pytest.raises(Refused) as refused:
            for _ in range(100):  # until both have taken their slot
                prober.run(request)
        assert refused.value.status.startswith("503") and refused.value.retry_after >= 1
    finally:
        quick_ping.release.set()
        for thread in running:
            thread.join(10)
    assert len(quick_ping.started) == MAX_CONCURRENT


CONCURRENT = """
import json, sys, threading, urllib.error, urllib.request
answers = []
def probe():
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=30) as reply:
            answers.append([reply.status, None])
    except urllib.error.HTTPError as e:
        answers.append([e.code, e.headers.get("Retry-After")])
threads = [threading.Thread(target=probe) for _ in range(int(sys.argv[2]))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(sorted(answers, key=str)))
"""


def test_a_probe_past_the_concurrency_cap_is_503_with_retry_after(host, write_config):
    daemon = serve(host, write_config, probe=True)
    try:
        done = host.run(["python3", "-c", CONCURRENT,
                         f"http://127.0.0.1:{METRICS}/probe?group={GROUP}&count=5",
                         str(MAX_CONCURRENT + 1)], timeout=60)
        answers = json.loads(done.stdout)
        assert [status for status, _ in answers].count(200) == MAX_CONCURRENT, answers
        (refused,) = [answer for answer in answers if answer[0] != 200]
        assert refused[0] == 503 and int(refused[1]) >= 1, answers
    finally:
        daemon.kill()
