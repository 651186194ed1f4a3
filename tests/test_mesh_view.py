"""`mcast-echo mesh` against real daemons (#23): four hosts on a bridge with IGMP snooping and
a querier (meshlab.py), each running the daemon with `mesh:` and a metrics endpoint. The
command, run as a user runs it, reads their endpoints twice a window apart, or a real
Prometheus that scrapes them with the project's mesh rules loaded; the cases in order: a
healthy mesh (exit 0), a deaf host named (exit 1), a partition named (exit 1).

Windows are measured stimuli (the command's own --window); everything else waits on a
condition.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from meshlab import METRICS_PORT, MeshLab
from waiting import wait_until

HOSTS = 4
INTERVAL = 0.2
WINDOW = 5  # seconds: 25 probes a pair, so one probe in flight at a scrape is 4 %
DEAF = 1
ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "packaging" / "prometheus" / "mcast-echo-mesh.rules.yml"
PROMETHEUS_LISTEN = "127.0.0.1:9390"
PROMETHEUS_WINDOW = 15  # seconds of increase() for --prometheus: 15 samples a series


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with MeshLab(tmp_path_factory.mktemp("meshview"), HOSTS, INTERVAL, expect=HOSTS) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(lab, tmp_path_factory):
    """Debian's prometheus in this namespace, scraping the four daemons every second with
    the mesh rules loaded; None without prometheus."""
    if shutil.which("prometheus") is None:
        yield None
        return
    workdir = tmp_path_factory.mktemp("prometheus")
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "900ms",
                         "evaluation_interval": "1s"},
              "rule_files": [str(RULES)],
              "scrape_configs": [{"job_name": "mcast-echo", "static_configs": [
                  {"targets": [f"{lab.address(i)}:{METRICS_PORT}" for i in range(HOSTS)]}]}]}
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    with open(workdir / "prometheus.log", "w") as log:
        proc = subprocess.Popen(["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={workdir / 'tsdb'}",
                                 f"--web.listen-address={PROMETHEUS_LISTEN}",
                                 "--log.level=warn"], stdout=log, stderr=log)
    try:
        wait_until(lambda: ready(f"http://{PROMETHEUS_LISTEN}/-/ready"), 30,
                   "prometheus ready", step=0.2)
        yield f"http://{PROMETHEUS_LISTEN}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def urls(lab: MeshLab) -> list[str]:
    return [f"http://{lab.address(i)}:{METRICS_PORT}/metrics" for i in range(HOSTS)]


def mesh(*argv: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "mcast_echo", "mesh", *argv],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def mesh_json(*argv: str) -> tuple[int, dict]:
    status, out = mesh("--json", *argv)
    return status, json.loads(out)


def peers_heard(lab: MeshLab) -> list[float]:
    return [s.get_value("mcast_echo_mesh_peers_heard") for s in lab.scrape()]


def query(prometheus: str, expr: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]["result"]


def test_a_healthy_mesh_is_exit_0_with_every_pair_healthy(lab):
    wait_until(lambda: peers_heard(lab) == [HOSTS - 1] * HOSTS, 15,
               "every host hearing the three others", step=0.2)
    status, document = mesh_json("--window", str(WINDOW), *urls(lab))
    assert status == 0, document
    assert [h["address"] for h in document["hosts"]] == [lab.address(i) for i in range(HOSTS)]
    assert len(document["pairs"]) == 12 and document["healthy_pairs"] == 12
    assert all(p["forward"] >= 0.95 and p["reverse"] >= 0.95 for p in document["pairs"])
    assert not (document["deaf"] or document["partitions"] or document["dead_paths"])


def history_s(prometheus: str) -> float:
    """Seconds of history of the shortest mesh series of pairs in prometheus (0: none)."""
    found = query(prometheus, "min(time() - min_over_time(timestamp(mcast_echo_mesh_heard_total"
                              "{prober!=\"\"})[5m:1s]))")
    return float(found[0]["value"][1]) if found else 0.0


def test_the_rules_and_the_prometheus_mode_see_the_same_healthy_mesh(lab, prometheus):
    if prometheus is None:
        pytest.skip("prometheus is not installed (Debian: prometheus)")

    # Until a minute of samples is in, rate()[1m] extrapolates each series from its first
    # sample (a peer's series starts when it is first heard): the ratios climb to 1 over
    # that minute. What the rules must get right at once is who is who: the pairs.
    def recorded() -> list[dict]:
        return query(prometheus, "mcast_echo_mesh:reverse_ratio:rate1m > 0.5 and "
                                 "on (prober, responder) mcast_echo_mesh:forward_ratio:rate1m "
                                 "> 0.5")
    wait_until(lambda: len(recorded()) == 12, 30,
               "12 ordered pairs recorded by the rules", step=0.5)
    pairs = {(r["metric"]["prober"], r["metric"]["responder"]) for r in recorded()}
    assert pairs == {(lab.address(p), lab.address(r)) for p in range(HOSTS)
                     for r in range(HOSTS) if p != r}
    # increase() over a window of 1 s scrapes is extrapolated per series, each target scraped
    # at its own phase: over 5 s, +-1 sample of 5 (20 %) and one scrape late read a healthy
    # pair 0.68 (1 run in 3, on an idle machine). Over PROMETHEUS_WINDOW, once every series
    # has that much history, +-1 sample is 7 %. The command's default window is 60 s.
    wait_until(lambda: history_s(prometheus) >= PROMETHEUS_WINDOW, PROMETHEUS_WINDOW + 15,
               f"{PROMETHEUS_WINDOW} s of every series in prometheus", step=0.5)
    status, document = mesh_json("--prometheus", prometheus, "--window",
                                 str(PROMETHEUS_WINDOW), "--healthy", "0.7")
    assert status == 0, (document["lossy_paths"], document["dead_paths"], document["deaf"])
    assert sorted(h["address"] for h in document["hosts"]) == \
        sorted(lab.address(i) for i in range(HOSTS))
    assert document["healthy_pairs"] == 12


def test_a_deaf_host_is_named_and_exit_1(lab, prometheus):
    lab.deafen(DEAF)
    try:
        wait_until(lambda: peers_heard(lab)[DEAF] == 0, 10, "the deaf host hearing nobody",
                   step=0.2)
        faulted = time.monotonic()
        status, out = mesh("--window", str(WINDOW), *urls(lab))
        if prometheus is not None:  # the window past the fault: increase() over it
            time.sleep(max(0.0, WINDOW + 2 - (time.monotonic() - faulted)))  # 2 scrapes more
            p_status, p_document = mesh_json("--prometheus", prometheus, "--window",
                                             str(WINDOW))
            p_hears_nobody = query(prometheus, "mcast_echo_mesh:hears_nobody")
    finally:
        lab.heal()
    deaf = lab.address(DEAF)
    assert status == 1, out
    assert f"deaf: {DEAF + 1} {deaf} hears nobody" in out, out
    assert "its own probes still reach 3 of 3" in out
    assert "partition" not in out and "dead:" not in out
    rows = out.splitlines()[2:2 + HOSTS]  # the matrix: the deaf host's column is dead
    assert all(row.split()[2 + DEAF] == "100/100" for i, row in enumerate(rows) if i != DEAF)
    if prometheus is not None:
        assert p_status == 1 and p_document["deaf"] == [deaf], p_document
        assert [r["metric"]["address"] for r in p_hears_nobody] == [deaf]  # the alert's expr


def test_a_partition_is_named_and_exit_1(lab):
    wait_until(lambda: peers_heard(lab) == [HOSTS - 1] * HOSTS, 20,
               "every host hearing the three others again", step=0.2)
    lab.partition()
    try:
        wait_until(lambda: peers_heard(lab) == [1] * HOSTS, 10,
                   "each host hearing only its own half", step=0.2)
        status, document = mesh_json("--window", str(WINDOW), *urls(lab))
        _status, out = mesh("--window", "2", *urls(lab))
    finally:
        lab.heal()
    halves = [[lab.address(i) for i in range(HOSTS) if lab.block(i) == b] for b in (0, 1)]
    assert status == 1 and document["partitions"] == halves, document
    assert not document["deaf"] and not document["dead_paths"]
    assert "partition: 2 groups whose multicast does not cross: [1 2] | [3 4]" in out
