"""`mcast-echo ping` end to end: real daemons and a plain echo server on namespaced hosts."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import mroute
from daemonproc import DaemonProcess
from mcast_echo.ping import command as ping_command
from mcast_echo.wire import probe
from netlab import Host, Lan, configure, ip

GROUP, PORT = "224.3.29.71", 9999
FAST = ["-i", "0.05", "-W", "0.5"]


pytestmark = pytest.mark.usefixtures("client_config")


def ping(*args: str, host: Host | None = None, timeout: float = 30,
         ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mcast_echo", "ping", *args]
    if host is not None:
        return host.run(cmd, check=False, timeout=timeout)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ping_json(*args: str, host: Host | None = None) -> tuple[int, dict]:
    done = ping("--json", *args, host=host)
    assert done.stdout.lstrip().startswith("{"), done.stderr
    return done.returncode, json.loads(done.stdout)


def by_name(document: dict) -> dict[str, dict]:
    return {r["name"]: r for r in document["responders"]}


class Site:
    """Hosts host-a, host-b, ... on one bridge (10.77.0.2, .3, ...), each running the daemon."""

    def __init__(self, tmp_path, count: int) -> None:
        self.lan = Lan()
        self.hosts: list[Host] = []
        self.daemons: list[DaemonProcess] = []
        config = tmp_path / "mcast-echo.yaml"
        config.write_text(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n")
        try:
            for i in range(count):
                host = Host(f"host-{'abcdefgh'[i]}")
                self.hosts.append(host)
                self.lan.plug(host, 2 + i)
                self.daemons.append(DaemonProcess(config, host=host))
            for daemon in self.daemons:
                daemon.wait_for("ready:")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()
        for host in self.hosts:
            host.close()
        self.lan.close()


@pytest.fixture(scope="module")
def site3(tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("site3"), 3)
    yield site
    site.close()


@pytest.fixture
def site(tmp_path):
    sites: list[Site] = []

    def make(count: int) -> Site:
        sites.append(Site(tmp_path, count))
        return sites[-1]

    yield make
    for made in sites:
        made.close()


# --- three daemons on one link --------------------------------------------------------------------

def test_three_responders_with_their_names_and_hops(site3):
    done = ping("-c", "3", *FAST, "--expect", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    for octet, name in ((2, "host-a"), (3, "host-b"), (4, "host-c")):
        assert f"192 bytes from 10.77.0.{octet} ({name}, eth0) hops=0: seq=2 time=" in done.stdout
        assert (f"10.77.0.{octet} ({name}, eth0) hops=0: 3 transmitted, 3 received, 0% loss, "
                "rtt min/avg/max/mdev = ") in done.stdout
    assert done.stdout.rstrip().endswith("3 probes transmitted, 3 responders")


def test_json_holds_the_documented_fields(site3, client_config):
    status, document = ping_json("-c", "4", *FAST, "-s", "1400", "-t", "5", "--expect", "3")
    assert status == 0
    assert document["settings"] == {
        "group": GROUP, "port": PORT, "interface": None, "source": None, "count": 4,
        "interval": 0.05, "size": 1400, "ttl": 5, "loopback": True, "wait": 0.5,
        "deadline": None, "expect": 3, "config": client_config,
        "protocol": "mcast-echo", "host": None, "spread": 0,
        "session": document["settings"]["session"]}
    assert len(document["settings"]["session"]) == 8
    assert (document["transmitted"], document["send_errors"]) == (4, 0)
    assert (document["responder_count"], document["expect"], document["ok"]) == (3, 3, True)
    assert re.fullmatch(r"tbr\d+ \(10\.77\.0\.1\)", document["sent_from"])
    assert document["group_echoes_heard"] is True
    assert document["notes"] == document["hints"] == []
    assert document["stray_datagrams"] == document["late_echoes"] == 0
    assert document["duration_s"] > 0
    assert (document["wrong_source_port_responders"], document["untracked_echoes"]) == (0, 0)
    responders = by_name(document)
    assert sorted(responders) == ["host-a", "host-b", "host-c"]
    b = responders["host-b"]
    assert set(b) == {"address", "port", "dns_name", "wrong_source_port", "name", "interface",
                      "group", "hops", "arrival_ttl", "reply_ttl", "via", "transmitted",
                      "received", "duplicates", "truncated", "corrupted", "without_trailer",
                      "group_echoes", "copies", "impossible_residence", "loss_percent",
                      "rtt_ms", "local", "group_path", "group_loss_percent", "counted"}
    assert (b["via"], b["group_echoes"], b["copies"], b["dns_name"]) == ("unicast", 0, 0, None)
    assert (b["local"], b["group_path"], b["group_loss_percent"], b["counted"]) == (
        False, False, None, True)
    assert (b["address"], b["port"], b["interface"], b["group"]) == ("10.77.0.3", PORT, "eth0",
                                                                     GROUP)
    assert b["wrong_source_port"] is False
    assert (b["hops"], b["arrival_ttl"], b["reply_ttl"]) == (0, 5, 64)
    assert (b["transmitted"], b["received"], b["loss_percent"]) == (4, 4, 0.0)
    assert (b["duplicates"], b["truncated"], b["corrupted"], b["without_trailer"]) == (0, 0, 0, 0)
    rtt = b["rtt_ms"]
    assert set(rtt) == {"min", "avg", "max", "mdev", "p50"}
    assert 0 < rtt["min"] <= rtt["avg"] <= rtt["max"] < 1000
    assert rtt["min"] <= rtt["p50"] <= rtt["max"]


@pytest.mark.parametrize("size", [
    probe.HEADER_SIZE,  # the bare header: no room for the responder's identity
    probe.MIN_TRAILER_PROBE,  # room for empty names: the group and interface are cut away
    1400, 1473,  # 1473: the first size that needs two fragments on a 1500 MTU
    probe.MAX_UDP_PAYLOAD])
def test_sizes_from_the_bare_header_to_the_udp_maximum(site3, size):
    status, document = ping_json("-c", "3", *FAST, "-s", str(size), "--expect", "3")
    assert status == 0
    for responder in document["responders"]:
        assert responder["received"] == 3
        assert responder["truncated"] == responder["corrupted"] == 0
        if size == probe.HEADER_SIZE:  # no room for the trailer: echoed verbatim
            assert responder["name"] is None and responder["without_trailer"] == 3
        elif size == probe.MIN_TRAILER_PROBE:
            assert responder["name"] == "" and responder["without_trailer"] == 0
        else:
            assert responder["name"] in ("host-a", "host-b", "host-c")


def test_small_probes_show_addresses_only_and_say_why(site3):
    done = ping("-c", "1", *FAST, "-s", "32")
    assert "(at 32 bytes a probe has no room for the responder's identity" in done.stdout
    assert "(at 32 bytes a probe has no room for the responder's residence time" in done.stdout
    assert "32 bytes from 10.77.0.2: seq=0 time=" in done.stdout
    done = ping("-c", "1", *FAST, "-s", "100")
    assert "(at 100 bytes a responder's names may be cut to fit" in done.stdout
    assert "100 bytes from 10.77.0.2 (host-a, eth0) hops=0: seq=0" in done.stdout


def test_quiet_prints_only_the_banner_and_the_summary(site3):
    done = ping("-q", "-c", "2", *FAST)
    assert "bytes from" not in done.stdout
    assert re.match(r"MCAST-ECHO PING 224\.3\.29\.71:9999 via tbr\d+ \(10\.77\.0\.1\): 192-byte",
                    done.stdout.splitlines()[0])
    assert "2 probes transmitted, 3 responders" in done.stdout


def test_ctrl_c_prints_the_summary_and_the_status(site3):
    proc = subprocess.Popen([sys.executable, "-m", "mcast_echo", "ping", "-i", "0.05", "--expect",
                             "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("MCAST-ECHO PING")  # the handler is in place
    guard = threading.Timer(10, proc.kill)  # bounds the wait for the three responders
    guard.start()
    early, responders = [], set()
    while len(responders) < 3:
        early.append(proc.stdout.readline())
        assert early[-1], f"not three responders within 10 s: {early}"
        responders.update(re.findall(r"bytes from (\S+)", early[-1]))
    guard.cancel()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=5)
    out = "".join(early) + out
    assert proc.returncode == 0, err
    assert "mcast-echo ping statistics" in out and out.rstrip().endswith("3 responders")
    assert "Traceback" not in err


# --- a responder goes away ---------------------------------------------------------------------

def test_a_stopped_responder_shows_loss_and_fails_expect(site):
    lab = site(3)
    proc = subprocess.Popen([sys.executable, "-m", "mcast_echo", "ping", "-c", "20", "-i", "0.1",
                             "-W", "0.5", "--expect", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # let every responder answer a few probes, then stop host-c
        if "(host-c, eth0) hops=0: seq=5 " in line:
            break
    assert lab.daemons[2].stop() == 0
    out, _err = proc.communicate(timeout=10)
    assert proc.returncode == 0  # host-c did answer during the run
    loss = dict(re.findall(r"^10\.77\.0\.\d+ \((host-\w)\b.*, ([\d.]+)% loss", out, re.M))
    assert loss["host-a"] == loss["host-b"] == "0"
    assert 20 <= float(loss["host-c"]) <= 75, out  # it answered only until it stopped

    done = ping("-c", "3", *FAST, "--expect", "3")
    assert done.returncode == 1
    assert "3 probes transmitted, 2 responders (expected at least 3)" in done.stdout
    assert "host-c" not in done.stdout


# --- other responders and local use -------------------------------------------------------------

def test_a_plain_echo_server_answers_without_a_trailer(plain_echo):
    done = ping("-c", "3", *FAST, "-s", "1400")
    assert done.returncode == 0, done.stderr
    assert "1400 bytes from 10.77.0.9: seq=2 time=" in done.stdout
    assert "10.77.0.9: 3 transmitted, 3 received, 0% loss" in done.stdout
    status, document = ping_json("-c", "2", *FAST)
    (responder,) = document["responders"]
    assert responder["name"] is None and responder["hops"] is None
    assert responder["received"] == responder["without_trailer"] == 2


def test_dash_i_lo_against_the_daemon_as_make_run_starts_it(tmp_path):
    """`make run` serves etc/mcast-echo.yaml on lo; ping -I lo must send from 127.0.0.1. The
    daemon is this host's own responder: shown as local, never counted (--expect 0, as the
    README says)."""
    with Host("devbox") as host:
        daemon = DaemonProcess("etc/mcast-echo.yaml", host=host, args=("--interface", "lo"))
        try:
            daemon.wait_for("ready:")
            done = ping("-I", "lo", "-c", "3", *FAST, "--expect", "0", host=host)
            assert done.returncode == 0, done.stderr
            assert "via lo (127.0.0.1)" in done.stdout
            # 127.0.0.1 has a name in /etc/hosts: shown as ping does, from the first echo on
            assert ("192 bytes from localhost (127.0.0.1) (devbox, lo) hops=0: seq=0 time="
                    in done.stdout)
            assert "localhost (127.0.0.1) (devbox, lo) hops=0: 3 transmitted" in done.stdout
            assert " ms (local)\n" in done.stdout
            assert ("\n3 probes transmitted, 0 responders, 1 local responder (this host's "
                    "own: not counted)\n") in done.stdout
            done = ping("-q", "-I", "lo", "-c", "1", *FAST, host=host)  # --expect 1
            assert done.returncode == 1, done.stdout
            done = ping("-n", "-I", "lo", "-c", "2", *FAST, host=host)  # -n: numeric
            assert "192 bytes from 127.0.0.1 (devbox, lo) hops=0: seq=1 time=" in done.stdout
            assert "localhost" not in done.stdout
            # Without -I there is no route to the group on a host with only lo.
            done = ping("-c", "1", host=host)
            assert done.returncode == 2
            assert "no route to 224.3.29.71: add a multicast route" in done.stderr
            assert "or pass -I IFACE" in done.stderr
        finally:
            daemon.stop()


# --- exit status and defaults -------------------------------------------------------------------

def test_nobody_answers_exit_1(tmp_path):
    with Lan():
        done = ping("-c", "2", "-i", "0.05", "-W", "0.2")
    assert done.returncode == 1
    assert "2 probes transmitted, 0 responders (expected at least 1)" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["-s", "10"], "argument -s: 10 is out of range 32..65507"),
    (["-s", "65508"], "argument -s: 65508 is out of range 32..65507"),
    (["10.1.2.3"], "10.1.2.3 is not a multicast group (224.0.0.0/4)"),
    (["fe80::1"], "fe80::1 is not a multicast group (ff00::/8)"),
    (["224.1.1.1:0"], "0 is out of range 1..65535"),
    (["224.1.1.1:x"], "'x' is not an integer"),
    (["[ff15::1]x"], "'[ff15::1]x' is not [IPv6-GROUP]:PORT"),
    (["224.1.1.1%eth0"], "only an IPv6 group takes %IFACE"),
    (["-i", "soon"], "argument -i: 'soon' is not a number"),
    (["-c", "0"], "argument -c: 0 is out of range >= 1"),
    (["-4", "-6"], "argument -6: not allowed with argument -4"),
    (["-6", "224.1.1.1"], "-6 and 224.1.1.1 (an IPv4 group) disagree"),
    (["-S", "10.77.0.1", "224.1.1.1"], "-S 10.77.0.1: 224.1.1.1 is an any-source group; -S is "
                                       "for source-specific groups (232.0.0.0/8, ff3x::/32)"),
    (["-S", "10.77.0.1", "ff15::1"], "-S 10.77.0.1: ff15::1 is an any-source group"),
    (["-S", "fd00::1", "232.1.1.1"], "-S fd00::1 is an IPv6 address and 232.1.1.1 an IPv4"),
    (["-S", "nohost", "232.1.1.1"], "-S 'nohost' is not an IP address"),
    (["-I", "eth1", "[ff02::1234%eth0]:9999"], "-I eth1 and %eth0 in the group disagree"),
    # #20.6: a link-scope group without -I is usage, as the man page's table has it
    (["-c", "1", "[ff02::1234]:9999"], "ff02::1234 is a link-scope group: name the interface "
                                       "with -I IFACE (or write [ff02::1234%IFACE]:9999)"),
    (["-c", "1", "ff02::1234"], "ff02::1234 is a link-scope group"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_options_exit_64_with_pings_usage(args, message):
    with Lan():
        done = ping(*args)
    assert done.returncode == 64, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (["-I", "nosuch0", "-c", "1"], "-I nosuch0: no such interface"),
    (["-I", "10.9.9.9", "-c", "1"], "-I 10.9.9.9 is not an IPv4 address of this host"),
    (["-S", "10.9.9.9", "-c", "1", "232.1.1.1"],
     "-S 10.9.9.9 is not an IPv4 address of this host"),
    (["--config", "/nonexistent.yaml", "-c", "1"], "/nonexistent.yaml"),
])
def test_network_and_config_errors_exit_2(args, message):
    with Lan():
        done = ping(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("text", [
    "2001-02-30: 1\n",  # a key that is an impossible date
    "2001-02-30\n",  # a document that is one
    "9" * 5000 + "\n",  # an integer past Python's 4,300-digit limit
    "? " + "9" * 5000 + "\n: 1\n",  # the same as a key
    "port: 1\nttl: 999\nbogus: 1\n",  # several problems
    "group: \"\\e[2J\\r\\n\"\n",  # control characters in a value the message repeats
])
def test_any_config_problem_is_one_line_and_exit_2(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = ping("--config", str(path), "-c", "1")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"mcast-echo ping: {path}")
    assert "\x1b" not in done.stderr and "\r" not in done.stderr


def test_a_config_loader_that_raises_anything_is_one_line_and_exit_2(monkeypatch, capsys,
                                                                    tmp_path):
    """Whatever config.py raises (it should be ConfigError), ping says it in one line."""
    path = tmp_path / "odd.yaml"
    path.write_text("group: 224.3.29.71\n")

    def broken_loader(_path, **_advice):
        raise RuntimeError("a loader bug\nwith a second line")

    monkeypatch.setattr(ping_command, "load_config", broken_loader)
    parser = argparse.ArgumentParser()
    ping_command.add_arguments(parser)
    assert ping_command.run(parser.parse_args(["--config", str(path), "-c", "1"])) == 2
    err = capsys.readouterr().err
    assert err == (f"mcast-echo ping: {path}: cannot be read as a config "
                   "(RuntimeError: a loader bug\\nwith a second line)\n")


def test_defaults_come_from_the_config_file(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text("group: 239.5.5.5\nport: 5555\nttl: 4\nloopback: false\n"
                      "interface: lo\n")
    with Host("cfg") as host:
        done = host.run([sys.executable, "-m", "mcast_echo", "ping", "--json", "-c", "1",
                         "-W", "0.1"], check=False,
                        env={**os.environ, "MCAST_ECHO_CONFIG": str(config)})
    assert done.returncode == 1, done.stderr
    settings = json.loads(done.stdout)["settings"]
    assert (settings["group"], settings["port"], settings["ttl"]) == ("239.5.5.5", 5555, 4)
    assert (settings["loopback"], settings["interface"]) == (False, "lo")
    assert settings["config"] == str(config)



# --- across a router ----------------------------------------------------------------------------

def test_hops_counts_the_routers_on_the_way(tmp_path):
    """Client on 10.77.0.0/24, a multicast router, a responder on 10.88.0.0/24: hops=1."""
    if reason := mroute.missing():
        pytest.skip(reason)
    config = tmp_path / "mcast-echo.yaml"
    config.write_text(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n")
    with Lan() as lan, Host("router") as router, Host("far") as far:
        lan.plug(router, 254)
        ip("link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", str(far.pid),
           host=router)
        configure("eth1", "10.88.0.1/24", host=router)
        configure("eth0", "10.88.0.2/24", host=far)
        router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        ip("route", "add", "default", "via", "10.88.0.1", host=far)
        ip("route", "add", "10.88.0.0/24", "via", "10.77.0.254")
        routing = router.popen([sys.executable, str(Path(__file__).with_name("mroute.py")),
                                "10.77.0.1", GROUP, "eth0", "eth1"],
                               stdout=subprocess.PIPE, text=True)
        daemon = DaemonProcess(config, host=far)
        try:
            assert routing.stdout.readline().strip() == "routing"
            daemon.wait_for("ready:")
            done = ping("-t", "2", "-c", "3", *FAST)
            assert done.returncode == 0, done.stderr
            assert "192 bytes from 10.88.0.2 (far, eth0) hops=1: seq=2 time=" in done.stdout
            status, document = ping_json("-t", "1", "-c", "2", *FAST)  # TTL 1 stays on the link
            assert status == 1 and document["responders"] == []
        finally:
            daemon.stop()
            routing.kill()
            routing.wait()
