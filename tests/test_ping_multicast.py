"""`mcast-echo ping` over IPv6, with -S on source-specific groups, and echoes sent to the group.

A small responder written here (ECHO_RESPONDER) stands in for the daemon, whose IPv6, SSM
and reply modes land in parallel: it joins an IPv4 or IPv6 group, any-source or (S,G),
and answers each probe with the real wire format (wire/probe.py) by unicast, to the
group (on the sender's port, as the daemon and ssmping do), or both; one test uses
`mcast-echo serve` itself. Everything runs on namespaced hosts on a bridge of the test's own
namespace; every responder stops after a count of probes and a deadline.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import textwrap

import pytest

from daemonproc import DaemonProcess
from mcast_echo.ping import command as ping_command
from mcast_echo.ping import options as ping_options
from mcast_echo.schema import Config, Listener
from netlab import Host, Lan, ScriptOnLan, ip, no_dad

PORT = 9999
V4_GROUP, SSM_GROUP = "224.3.29.71", "232.1.1.1"
V6_SITE, V6_LINK, V6_SSM = "ff15::1234", "ff12::1234", "ff35::1234"
FAST = ["-i", "0.05", "-W", "0.5"]

# plan: family, group, port, ifname, sources (SSM: the only senders joined), reply
# (unicast | group | both), probes, seconds. It prints "ready" once joined.
ECHO_RESPONDER = textwrap.dedent("""
    import json, select, socket, struct, sys, time
    from mcast_echo.wire import probe

    plan = json.loads(sys.argv[1])
    v6 = plan["family"] == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    level = socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP
    index = socket.if_nametoindex(plan["ifname"])
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(level, 29 if v6 else 49, 0)  # IP(V6)_MULTICAST_ALL off
    sock.bind(("::" if v6 else "", plan["port"]))
    if v6:
        sock.setsockopt(level, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(level, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(level, socket.IPV6_MULTICAST_HOPS, 1)
    else:
        sock.setsockopt(level, 12, 1)  # IP_RECVTTL
        sock.setsockopt(level, socket.IP_MULTICAST_IF,
                        struct.pack("4s4si", bytes(4), bytes(4), index))
        sock.setsockopt(level, socket.IP_MULTICAST_TTL, 1)

    def sockaddr(address):  # a struct sockaddr_storage
        if v6:
            raw = struct.pack("=HHI16sI", socket.AF_INET6, 0, 0,
                              socket.inet_pton(family, address), 0)
        else:
            raw = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton(address))
        return raw.ljust(128, bytes(1))

    if plan["sources"]:  # MCAST_JOIN_SOURCE_GROUP: struct group_source_req
        for source in plan["sources"]:
            sock.setsockopt(level, 46, struct.pack("=I4x", index) + sockaddr(plan["group"])
                            + sockaddr(source))
    elif v6:
        sock.setsockopt(level, socket.IPV6_JOIN_GROUP,
                        socket.inet_pton(family, plan["group"]) + struct.pack("=I", index))
    else:
        sock.setsockopt(level, socket.IP_ADD_MEMBERSHIP,
                        struct.pack("4s4si", socket.inet_aton(plan["group"]), bytes(4), index))
    print("ready", flush=True)
    deadline, answered = time.monotonic() + plan["seconds"], 0
    while time.monotonic() < deadline and answered < plan["probes"]:
        if not select.select([sock], [], [], 0.2)[0]:
            continue
        data, ancdata, _flags, sender = sock.recvmsg(65535, 256)
        header = probe.parse_header(data)
        if header is None or sender[1] == plan["port"]:  # not a probe, or an echo
            continue
        ttl = None
        for _level, _kind, value in ancdata:
            ttl = struct.unpack("=i", value[:4])[0]
        echo = probe.with_trailer(data, probe.Arrival(socket.gethostname(), plan["ifname"],
                                                      plan["group"], ttl, time.time_ns()))
        answered += 1
        if plan["reply"] in ("unicast", "both"):
            sock.sendto(echo, sender)
        if plan["reply"] in ("group", "both"):  # the group, on the sender's port
            sock.sendto(echo, (plan["group"], sender[1], 0, index) if v6
                        else (plan["group"], sender[1]))
""")


class Responder(ScriptOnLan):
    """Host *name* at 10.77.0.9 / fd77::9 on a bridge with the test (10.77.0.1 / fd77::1)."""

    def __init__(self, name: str = "resp", **plan) -> None:
        full = {"family": 4, "group": V4_GROUP, "port": PORT, "ifname": "eth0",
                "sources": None, "reply": "unicast", "probes": 50, "seconds": 30, **plan}
        super().__init__(name, 9, ECHO_RESPONDER, json.dumps(full), v6="fd77:")
        self.bridge = self.lan.bridge


pytestmark = pytest.mark.usefixtures("no_config_file")


def ping(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcast_echo", "ping", *args],
                          capture_output=True, text=True, timeout=timeout)


def ping_json(*args: str) -> tuple[int, dict]:
    done = ping("--json", *args)
    assert done.stdout.lstrip().startswith("{"), done.stderr
    return done.returncode, json.loads(done.stdout)


# --- IPv6 --------------------------------------------------------------------------------------

def test_ipv6_site_scope_group_in_brackets():
    with Responder("six", family=6, group=V6_SITE) as lab:
        done = ping(f"[{V6_SITE}]:{PORT}", "-I", lab.bridge, "-c", "3", *FAST, "-n")
        status, document = ping_json(f"[{V6_SITE}]:{PORT}", "-I", "fd77::1", "-c", "2", *FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"MCAST-ECHO PING [{V6_SITE}]:{PORT} via {lab.bridge} (fd77::1"
                                  "): 192-byte probes, hop limit 1, loopback on")
    assert "192 bytes from fd77::9 (six, eth0) hops=0: seq=2 time=" in done.stdout
    assert "fd77::9 (six, eth0) hops=0: 3 transmitted, 3 received, 0% loss" in done.stdout
    assert status == 0
    (responder,) = document["responders"]
    assert (responder["address"], responder["port"], responder["group"]) == ("fd77::9", PORT,
                                                                             V6_SITE)
    assert (responder["hops"], responder["arrival_ttl"], responder["reply_ttl"]) == (0, 1, 64)
    assert document["settings"]["group"] == V6_SITE and document["sent_from"].endswith(
        "(fd77::1)")


def test_a_bare_ipv6_group_follows_the_route():
    with Responder("six", family=6, group=V6_SITE) as lab:
        ip("-6", "route", "add", "multicast", "ff15::/16", "dev", lab.bridge, "table", "local")
        done = ping(V6_SITE, "-c", "2", *FAST, "-t", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"MCAST-ECHO PING [{V6_SITE}]:{PORT} via {lab.bridge} "
                                  "(fd77::1): 192-byte probes, hop limit 3")
    assert "from fd77::9 (six, eth0) hops=0: seq=1 time=" in done.stdout  # arrival hop limit 3


def test_link_scope_group_answers_from_the_responders_link_local_address():
    with Responder("six", family=6, group=V6_LINK) as lab:
        done = ping(f"[{V6_LINK}%{lab.bridge}]:{PORT}", "-c", "2", *FAST, "-n")
        again = ping(V6_LINK, "-I", lab.bridge, "-c", "1", *FAST, "-n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert again.returncode == 0, again.stdout + again.stderr
    # the echo comes from the responder's fe80:: address, shown with the zone it came through
    assert re.search(rf"^192 bytes from fe80::[0-9a-f:]+%{lab.bridge} \(six, eth0\) hops=0: "
                     r"seq=1 time=", done.stdout, re.M), done.stdout
    assert re.search(rf"via {lab.bridge} \(fe80::[0-9a-f:]+", done.stdout)


# --- SSM and -S --------------------------------------------------------------------------------

@pytest.mark.parametrize("family, group, listed, unlisted", [
    (4, SSM_GROUP, "10.77.0.1", "10.77.0.100"),
    (6, V6_SSM, "fd77::1", "fd77::100"),
])
def test_dash_s_sends_from_the_source_the_responder_lists(family, group, listed, unlisted):
    with Responder("ssm", family=family, group=group, sources=[listed]) as lab:
        ip("addr", "add", f"{unlisted}/{24 if family == 4 else 64}", "dev", lab.bridge,
           *(["nodad"] if family == 6 else []))
        target = f"[{group}]:{PORT}" if family == 6 else group
        done = ping(target, "-S", listed, "-c", "2", *FAST)
        refused = ping(target, "-S", unlisted, "-c", "2", *FAST)
        status, document = ping_json(target, "-S", unlisted, "-c", "1", "-W", "0.3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"via {lab.bridge} ({listed})" in done.stdout
    assert f"from {'fd77::9' if family == 6 else '10.77.0.9'} (ssm, eth0) hops=0" in done.stdout
    assert "source-specific group and no -S" not in done.stdout
    assert refused.returncode == 1, refused.stdout + refused.stderr  # never joined: no answer
    assert f"via {lab.bridge} ({unlisted})" in refused.stdout
    assert "2 probes transmitted, 0 responders (expected at least 1)" in refused.stdout
    assert status == 1 and document["settings"]["source"] == unlisted
    assert document["ok"] is False and document["responders"] == []


def test_an_ssm_group_without_dash_s_says_so_in_the_banner():
    with Responder("ssm", group=SSM_GROUP, sources=["10.77.0.1"]):
        done = ping(SSM_GROUP, "-c", "1", "-W", "0.3")
    assert done.returncode == 0, done.stdout + done.stderr  # 10.77.0.1 is the route's source
    assert (f"({SSM_GROUP} is a source-specific group and no -S was given: responders answer "
            "only the sources in their `sources:`; pass -S") in done.stdout


# --- echoes sent to the group ------------------------------------------------------------------

def test_echoes_sent_to_the_group_are_marked_group():
    with Responder("grp", reply="group"):
        done = ping(V4_GROUP, "-c", "3", *FAST)
        status, document = ping_json(V4_GROUP, "-c", "2", *FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if " bytes from " in line]
    assert len(lines) == 3 and all(line.endswith(" ms (group)") for line in lines), lines
    assert "10.77.0.9 (grp, eth0) hops=0: 3 transmitted, 3 received (group), 0% loss" in (
        done.stdout)
    (responder,) = document["responders"]
    assert (responder["via"], responder["received"], responder["group_echoes"]) == ("group", 2,
                                                                                   2)
    assert document["group_echoes_heard"] is True and status == 0


def test_a_responder_answering_both_ways_is_counted_once_and_never_dup():
    with Responder("both", reply="both"):
        done = ping(V4_GROUP, "-c", "3", *FAST)
        status, document = ping_json(V4_GROUP, "-c", "4", *FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DUP!" not in done.stdout
    for seq in range(3):
        copies = re.findall(rf"^192 bytes from 10\.77\.0\.9 \(both, eth0\) hops=0: seq={seq} "
                            r"time=[\d.]+ ms( \(group\))?$", done.stdout, re.M)
        assert sorted(copies) == ["", " (group)"], done.stdout
    assert ("3 transmitted, 3 received (unicast and group, +3 copies), 3 by the group (0% group "
            "loss), 0% loss" in done.stdout)
    assert done.stdout.rstrip().endswith("3 probes transmitted, 1 responder")
    (responder,) = document["responders"]
    assert (responder["via"], responder["received"], responder["duplicates"],
            responder["copies"]) == ("both", 4, 0, 4)
    assert responder["loss_percent"] == 0.0 and status == 0


def test_a_local_responder_on_the_groups_port_does_not_hide_group_echoes():
    """Group echoes come to our own port, so a process holding the group's port is no bar."""
    with Responder("grp", reply="group"):
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR: held
        holder.bind((V4_GROUP, PORT))
        try:
            status, document = ping_json(V4_GROUP, "-c", "2", *FAST)
        finally:
            holder.close()
    assert status == 0 and document["group_echoes_heard"] is True
    (responder,) = document["responders"]
    assert (responder["via"], responder["received"]) == ("group", 2)


def test_the_daemon_answers_ipv6_both_ways(tmp_path):
    config = tmp_path / "six.yaml"
    config.write_text(f"listeners:\n  - group: {V6_SITE}\n    port: {PORT}\n"
                      "    interface: eth0\n    reply: both\n")
    no_dad()
    with Lan() as lan, Host("daemon6") as host:
        no_dad(host)
        lan.plug(host, 9)
        ip("-6", "addr", "add", "fd77::1/64", "dev", lan.bridge, "nodad")
        ip("-6", "addr", "add", "fd77::9/64", "dev", "eth0", "nodad", host=host)
        daemon = DaemonProcess(config, host=host)
        try:
            daemon.wait_for("ready:")
            done = ping(f"[{V6_SITE}]:{PORT}", "-I", lan.bridge, "-c", "3", *FAST, "-n")
        finally:
            daemon.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DUP!" not in done.stdout
    assert re.search(r"^192 bytes from fd77::9 \(daemon6, eth0\) hops=0: seq=2 time=[\d.]+ ms "
                     r"\(group\)$", done.stdout, re.M), done.stdout
    assert re.search(r"^192 bytes from fd77::9 \(daemon6, eth0\) hops=0: seq=2 time=[\d.]+ ms$",
                     done.stdout, re.M), done.stdout
    assert ("fd77::9 (daemon6, eth0) hops=0: 3 transmitted, 3 received (unicast and group, "
            "+3 copies), 3 by the group (0% group loss), 0% loss") in done.stdout


# --- -4 / -6 with a config of several listeners ------------------------------------------------

LISTENERS = (Listener(group="239.1.1.1", port=5001, interface="eth0", ttl=3),
             Listener(group="ff15::1", port=5002, interface="eth1", ttl=4, loopback=False),
             Listener(group="232.1.1.1", port=5003, sources=("10.0.0.5",)),
             Listener(group="ff15::2", port=5004))


@pytest.mark.parametrize("argv, expected", [
    ([], ("239.1.1.1", 5001, "eth0", 3, True)),
    (["-4"], ("239.1.1.1", 5001, "eth0", 3, True)),
    (["-6"], ("ff15::1", 5002, "eth1", 4, False)),
    (["ff15::2"], ("ff15::2", 5004, None, 1, True)),  # the listener of that group
    (["[ff15::9]:7000"], ("ff15::9", 7000, "eth1", 4, False)),  # the first of its family
    (["-6", "-I", "lo", "-t", "9"], ("ff15::1", 5002, "lo", 9, False)),
])
def test_dash_4_and_dash_6_take_the_first_listener_of_their_family(monkeypatch, tmp_path,
                                                                   argv, expected):
    path = tmp_path / "listeners.yaml"
    path.write_text("{}\n")
    monkeypatch.setattr(ping_command, "load_config",
                        lambda _path, **_advice: Config(path=str(path), listeners=LISTENERS))
    parser = argparse.ArgumentParser()
    ping_options.add_arguments(parser)
    settings = ping_command.resolve_settings(parser.parse_args(["--config", str(path), *argv]))
    assert (settings.group, settings.port, settings.interface, settings.ttl,
            settings.loopback) == expected


def test_dash_6_without_an_ipv6_group_is_a_usage_error(monkeypatch, tmp_path):
    path = tmp_path / "v4only.yaml"
    path.write_text("{}\n")
    done = ping("--config", str(path), "-6", "-c", "1")
    assert done.returncode == 64
    assert done.stderr == (f"mcast-echo ping: -6: no IPv6 group to probe and {path} has no "
                           "IPv6 listener: name one, e.g. mcast-echo ping [ff15::1]:9999\n")
