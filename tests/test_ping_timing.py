"""What `mcast-echo ping` times: the -w deadline and its loss (issue 19.1), the round trip
without either end's software (19.2), replies spread over --spread (19.3)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemonproc import DaemonProcess

GROUP, PORT = "224.3.29.71", 9999


@pytest.fixture(scope="module")
def responder(tmp_path_factory):
    """One daemon on another host, cabled to ours: a lossless link."""
    from netlab import Host, veth
    directory = tmp_path_factory.mktemp("timing")
    config = directory / "mcast-echo.yaml"
    config.write_text(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n")
    with Host("timing") as host:
        veth("vtiming", "10.67.0.1/24", host, "eth0", "10.67.0.2/24")
        with DaemonProcess(config, host=host) as daemon:
            daemon.wait_for("ready:")
            yield host, daemon
    subprocess.run(["ip", "link", "del", "vtiming"], capture_output=True)


def ping(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mcast_echo", "ping", GROUP, "-p", str(PORT),
                             "-I", "vtiming", "-n", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def samples(path) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found.setdefault(sample.name, sample.value)
    return found


# --- 19.1: -w ends on time and counts no probe lost whose answer could not come -----------------

@pytest.mark.parametrize("deadline, interval, probes", [("1", "0.2", 5), ("2", "0.5", 4),
                                                         ("3", "1", 3)])
def test_a_deadline_run_on_a_lossless_link_loses_nothing(responder, tmp_path, deadline,
                                                         interval, probes):
    textfile = tmp_path / "probe.prom"
    text = ping("-w", deadline, "-i", interval)
    as_json = ping("-w", deadline, "-i", interval, "--json",
                   "--prometheus-textfile", str(textfile))
    text_out, text_err = text.communicate(timeout=30)
    json_out, json_err = as_json.communicate(timeout=30)
    assert text.returncode == 0, text_out + text_err
    assert (f"10.67.0.2 (timing, eth0) hops=0: {probes} transmitted, {probes} received, "
            "0% loss") in text_out
    assert re.search(rf"^{probes} probes transmitted, 1 responder$", text_out, re.M), text_out
    assert as_json.returncode == 0, json_out + json_err
    document = json.loads(json_out)
    assert document["transmitted"] == probes
    [only] = document["responders"]
    assert (only["received"], only["loss_percent"]) == (probes, 0.0)
    assert 0 < document["duration_s"] <= float(deadline)
    found = samples(textfile)
    assert found["mcast_echo_probe_loss_ratio"] == 0.0
    assert found["mcast_echo_probe_probes_sent"] == probes
    assert 0 < found["mcast_echo_probe_duration_seconds"] <= float(deadline)


def test_a_count_with_a_deadline_keeps_sending_every_probe(responder):
    """-c N: the count decides what is sent, as before; -w only ends the run."""
    done = ping("-c", "3", "-i", "0.2", "-w", "5", "--json")
    out, err = done.communicate(timeout=30)
    document = json.loads(out)
    assert document["transmitted"] == 3, err
    assert document["responders"][0]["received"] == 3
