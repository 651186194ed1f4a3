"""A host that hears nothing must not say that everything works (issue 19, item 5).

On a bridge of the test's namespace: this host's own responder answers ping over loopback,
so its echo is shown, marked local, and never counts toward --expect, success, the
textfile or /probe; a `reply: both` responder whose echoes to the group are dropped on
their way out (nftables in its namespace) shows the group loss and does not count."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemonproc import DaemonProcess
from mcast_echo.ping.local import REFRESH_S, ThisHost
from mcast_echo.ping.tally import ResponderTable
from mcast_echo.wire import probe
from netlab import Host, Lan, ip
from waiting import wait_until

GROUP, PORT = "224.3.29.71", 9999
FAST = ["-i", "0.05", "-W", "0.5"]


def ping(host: Host | None, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mcast_echo", "ping", f"{GROUP}:{PORT}", "-n", *args]
    if host is not None:
        return host.run(cmd, check=False, timeout=30)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def samples(text: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


@pytest.fixture
def lan():
    with Lan() as made:
        yield made


def serve(host: Host, tmp_path, name: str, extra: str = "") -> DaemonProcess:
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n{extra}")
    daemon = DaemonProcess(config, host=host)
    daemon.wait_for("ready:")
    return daemon


# --- this host's own responder ----------------------------------------------------------------

def test_this_host_is_every_address_of_it_and_loopback():
    this_host = ThisHost()
    assert this_host("127.0.0.1") and this_host("127.5.5.5") and this_host("::1")
    assert this_host("::ffff:127.0.0.1")  # mapped: the IPv4 address inside is asked
    assert not this_host("192.0.2.77") and not this_host("not an address")


def test_an_address_added_during_a_run_becomes_local(lan):
    """Addresses come and go: one this host gains after ping started is local too (a miss
    re-reads the host's addresses, at most once per REFRESH_S)."""
    this_host = ThisHost()
    assert not this_host("10.77.0.99")
    ip("addr", "add", "10.77.0.99/24", "dev", lan.bridge)
    wait_until(lambda: this_host("10.77.0.99"), 5 * REFRESH_S, "10.77.0.99 seen as local",
               step=0.05)


def test_a_local_responder_is_shown_marked_and_never_counted(lan, tmp_path):
    """The lone host's ping hears only its own daemon: exit 1, not 0; a second host's
    daemon then makes it 0, with the local one still shown and not counted."""
    with Host("lonely") as lonely, Host("other") as other:
        lan.plug(lonely, 2)
        lan.plug(other, 3)
        own = serve(lonely, tmp_path, "lonely")
        try:
            done = ping(lonely, "-c", "3", *FAST, "--expect", "1")
            assert done.returncode == 1, done.stdout + done.stderr
            assert "192 bytes from 10.77.0.2 (lonely, eth0) hops=0: seq=0 time=" in done.stdout
            assert " (local)\n" in done.stdout
            assert ("(local: this host's own responder, not counted)" in done.stdout)
            assert ("\n3 probes transmitted, 0 responders (expected at least 1), 1 local "
                    "responder (this host's own: not counted)\n") in done.stdout
            assert "hint: local: only this host's own responder answered (10.77.0.2)" in \
                done.stdout
            # --expect 0 (the README's way to look at the local daemon alone): no hints
            done = ping(lonely, "-c", "2", *FAST, "--expect", "0")
            assert done.returncode == 0 and " (local)\n" in done.stdout, done.stdout
            assert "hint:" not in done.stdout, done.stdout

            textfile = tmp_path / "lonely.prom"
            done = ping(lonely, "-q", "-c", "2", *FAST, "--json", "--prometheus-textfile",
                        str(textfile))
            document = json.loads(done.stdout)
            assert done.returncode == 1 and document["ok"] is False
            assert (document["responder_count"], document["local_responders"]) == (0, 1)
            [mine] = document["responders"]
            assert (mine["address"], mine["local"], mine["counted"]) == ("10.77.0.2", True,
                                                                          False)
            found = samples(textfile.read_text())
            run = {"group": GROUP, "port": str(PORT)}
            assert found["mcast_echo_probe_success"] == [(run, 0.0)]
            assert found["mcast_echo_probe_responders"] == [(run, 0.0)]
            assert found["mcast_echo_probe_local_responders"] == [(run, 1.0)]
            assert found["mcast_echo_probe_responders_omitted"] == [(run, 0.0)]
            assert "mcast_echo_probe_up" not in found  # no series for this host itself

            second = serve(other, tmp_path, "other")
            try:
                done = ping(lonely, "-c", "3", *FAST, "--expect", "1", "--json")
                document = json.loads(done.stdout)
                assert done.returncode == 0, done.stderr
                counted = {r["address"]: r["counted"] for r in document["responders"]}
                assert counted == {"10.77.0.2": False, "10.77.0.3": True}
                assert (document["responder_count"], document["local_responders"]) == (1, 1)
                done = ping(lonely, "-c", "2", *FAST, "--expect", "2")
                assert done.returncode == 1  # the local one never makes up the count
            finally:
                second.stop()
        finally:
            own.stop()


def test_from_another_host_the_same_responder_counts(lan, tmp_path):
    """Local is about where ping runs: from the test's namespace (10.77.0.1) the daemon
    is another host and counts."""
    with Host("lonely") as lonely:
        lan.plug(lonely, 2)
        daemon = serve(lonely, tmp_path, "lonely")
        try:
            done = ping(None, "-c", "2", *FAST, "--expect", "1", "-I", lan.bridge)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "(local" not in done.stdout
        finally:
            daemon.stop()


def test_probe_endpoint_does_not_count_this_host(lan, tmp_path):
    """/probe runs ping on the daemon's host: with nobody else on the link it fails."""
    with Host("prober") as prober:
        lan.plug(prober, 2)
        config = tmp_path / "prober.yaml"
        config.write_text(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n"
                          "metrics: {listen: '127.0.0.1:9101', probe: true}\n")
        daemon = DaemonProcess(config, host=prober)
        try:
            daemon.wait_for("ready:")
            done = prober.python(
                "import urllib.request; print(urllib.request.urlopen("
                f"'http://127.0.0.1:9101/probe?group={GROUP}&count=2', timeout=20)"
                ".read().decode())", timeout=30)
            found = samples(done.stdout)
            assert found["probe_success"] == [({}, 0.0)]
            assert found["mcast_echo_probe_local_responders"][0][1] == 1.0
            assert found["mcast_echo_probe_responders"][0][1] == 0.0
        finally:
            daemon.stop()


# --- the group path of reply: both ------------------------------------------------------------

def drop_outgoing_multicast(host: Host) -> None:
    """nftables in *host*'s namespace: every multicast datagram it sends is dropped."""
    host.run(["nft", "add", "table", "inet", "mcastdrop"])
    host.run(["nft", "add", "chain", "inet", "mcastdrop", "out",
              "{ type filter hook output priority 0 ; }"])
    host.run(["nft", "add", "rule", "inet", "mcastdrop", "out", "ip", "daddr", "224.0.0.0/4",
              "counter", "drop"])


def dropped(host: Host) -> int:
    listing = host.run(["nft", "list", "chain", "inet", "mcastdrop", "out"]).stdout
    return int(listing.split("counter packets ")[1].split()[0])


needs_nft = pytest.mark.skipif(shutil.which("nft") is None,
                               reason="nft (nftables) is not installed")


@needs_nft
def test_a_reply_both_responder_whose_group_echoes_are_lost_fails(lan, tmp_path):
    with Host("both-ok") as good, Host("both-cut") as cut:
        lan.plug(good, 2)
        lan.plug(cut, 3)
        daemons = [serve(good, tmp_path, "good", "reply: both\n"),
                   serve(cut, tmp_path, "cut", "reply: both\n")]
        try:
            drop_outgoing_multicast(cut)
            done = ping(None, "-c", "4", *FAST, "--expect", "1", "-I", lan.bridge, "--json")
            document = json.loads(done.stdout)
            by_address = {r["address"]: r for r in document["responders"]}
            healthy, lost = by_address["10.77.0.2"], by_address["10.77.0.3"]
            assert (healthy["via"], healthy["group_path"], healthy["counted"]) == (
                "both", True, True)
            assert healthy["group_loss_percent"] == 0.0
            assert (lost["via"], lost["received"], lost["group_echoes"]) == ("unicast", 4, 0)
            assert (lost["group_path"], lost["group_loss_percent"], lost["counted"]) == (
                True, 100.0, False)
            assert (document["responder_count"], document["group_lost_responders"]) == (1, 1)
            assert done.returncode == 0  # --expect 1: the healthy one
            assert dropped(cut) >= 4

            done = ping(None, "-c", "4", *FAST, "--expect", "2", "-I", lan.bridge)
            assert done.returncode == 1, done.stdout
            assert ("10.77.0.3 (both-cut, eth0) hops=0: 4 transmitted, 4 received, "
                    "0 by the group (100% group loss), 0% loss") in done.stdout
            assert "(not counted: none of its echoes to the group arrived)" in done.stdout
            assert ", 1 whose echoes to the group never arrived (not counted)" in done.stdout

            textfile = tmp_path / "both.prom"
            ping(None, "-q", "-c", "3", *FAST, "--expect", "2", "-I", lan.bridge,
                 "--prometheus-textfile", str(textfile))
            found = samples(textfile.read_text())
            up = {labels["responder"]: value for labels, value in found["mcast_echo_probe_up"]}
            loss = {labels["responder"]: value
                    for labels, value in found["mcast_echo_probe_loss_ratio"]}
            assert up == {"10.77.0.2": 1.0, "10.77.0.3": 0.0}
            assert loss == {"10.77.0.2": 0.0, "10.77.0.3": 1.0}  # the group path's
            assert found["mcast_echo_probe_success"][0][1] == 0.0
        finally:
            for daemon in daemons:
                daemon.stop()


@needs_nft
def test_only_a_group_lost_responder_is_exit_1_with_a_hint(lan, tmp_path):
    with Host("both-cut") as cut:
        lan.plug(cut, 3)
        daemon = serve(cut, tmp_path, "cut", "reply: both\n")
        try:
            drop_outgoing_multicast(cut)
            done = ping(None, "-c", "3", *FAST, "-I", lan.bridge)
            assert done.returncode == 1, done.stdout
            assert ("hint: group: 10.77.0.3 answered by unicast, but none of its echoes to "
                    f"{GROUP} arrived") in done.stdout
        finally:
            daemon.stop()


def test_the_trailer_says_whether_the_responder_echoes_to_the_group():
    built = probe.build_probe(7, 1, 0, 192)
    for to_group in (False, True):
        arrival = probe.Arrival("h", "eth0", GROUP, 1, 5, to_group)
        echo = probe.check_echo(probe.with_trailer(built, arrival), 7)
        assert echo is not None and echo.trailer is not None
        assert echo.trailer.group_echoes is to_group
    table = ResponderTable(PORT)
    stats = table.lookup("10.0.0.9", PORT)
    assert stats is not None
    arrival = probe.Arrival("h", "eth0", GROUP, 1, 5, True)
    stats.record(probe.check_echo(probe.with_trailer(built, arrival), 7), 1000, 64, 1)
    assert stats.received == 1 and stats.group_path and not stats.counted
