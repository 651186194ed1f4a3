"""`make bench`'s C tools: cload against cecho over IPv4 and IPv6, with unicast, group and both
replies, counts every echo the way it came and only echoes that are the request byte for
byte; its probe tells whether every group answered.

Short runs (0.3 s) in a host of their own (the IPv6 multicast route on lo stays there).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netlab import Host
from waiting import wait_until

BENCH = Path(__file__).resolve().parent / "bench"
CORRUPTING_ECHO = """
import socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("", 9999))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack(
    "4s4si", socket.inet_aton("224.3.29.71"), bytes(4), socket.if_nametoindex("lo")))
print("ready", file=sys.stderr, flush=True)
sock.settimeout(10)
for count in range(1, 1_000_000):  # bounded: a count, and 10 s without a datagram
    data, peer = sock.recvfrom(2048)
    if count % 10 == 0:  # every 10th echo has its last byte changed
        data = data[:-1] + bytes([data[-1] ^ 1])
    sock.sendto(data, peer)
"""


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    out = tmp_path_factory.mktemp("bench")
    for name in ("cecho", "cload"):
        subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out / name),
                        str(BENCH / f"{name}.c")], check=True, timeout=120)
    return {"cecho": out / "cecho", "cload": out / "cload"}


@pytest.fixture(scope="module")
def box():
    with Host("benchbox") as host:
        host.run(["ip", "-6", "route", "add", "local", "ff00::/8", "dev", "lo", "table", "local"])
        yield host


def started(host: Host, cmd: list[str]) -> subprocess.Popen:
    proc = host.popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    wait_until(lambda: "ready" in proc.stderr.readline() or proc.poll() is not None, 10,
               "the responder's ready line")
    assert proc.poll() is None, proc.stderr.read()
    return proc


def stopped(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.communicate(timeout=10)


def cload(host: Host, tools: dict[str, Path], *args: str) -> tuple[int, dict]:
    done = host.run([str(tools["cload"]), "--seconds", "0.3", "--warmup", "0.1",
                     "--timeout-ms", "200", *args], check=False, timeout=30)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("group", ["224.3.29.71", "ff05::1234"])
@pytest.mark.parametrize("reply", ["unicast", "group", "both"])
def test_cload_counts_each_copy_of_the_c_echo(tools, box, group, reply):
    echo = started(box, [str(tools["cecho"]), group, "9999", "lo", "--reply", reply])
    try:
        code, figures = cload(box, tools, "--group", group, "--expect", reply, "--size", "200")
    finally:
        stopped(echo)
    assert code == 0
    assert figures["family"] == (6 if ":" in group else 4)
    assert figures["answered"] > 100
    copies = 2 if reply == "both" else 1
    # a request half answered when the measured window opens or closes: at most the window
    assert abs(figures["echoes"] - copies * figures["answered"]) <= figures["window"]
    assert (figures["mismatched"], figures["unexpected"], figures["duplicate"],
            figures["bad"]) == (0, 0, 0, 0)
    if reply != "unicast":  # joined: every copy's way is known, and both ways are used
        assert figures["to_group"] > 0
        assert (figures["to_host"] > 0) == (reply == "both")


def test_cload_expecting_group_echoes_counts_unicast_ones_as_unexpected(tools, box):
    echo = started(box, [str(tools["cecho"]), "224.3.29.71", "9999", "lo"])
    try:
        _, figures = cload(box, tools, "--expect", "group")
    finally:
        stopped(echo)
    assert figures["answered"] == 0
    assert figures["unexpected"] > 0 and figures["to_host"] == figures["unexpected"]


def test_cload_counts_only_echoes_that_are_the_request_byte_for_byte(tools, box):
    echo = started(box, [sys.executable, "-c", CORRUPTING_ECHO])
    try:
        _, figures = cload(box, tools, "--size", "64")
    finally:
        stopped(echo)
    assert figures["echoes"] > 0 and figures["mismatched"] > 0
    # every 10th echo was changed: the counted ones are the other nine in ten (with margin)
    assert 0.05 < figures["mismatched"] / (figures["echoes"] + figures["mismatched"]) < 0.2


def test_probe_says_when_a_group_never_answers(tools, box):
    echo = started(box, [str(tools["cecho"]), "224.3.29.71", "9999", "lo"])
    try:
        code_one, one = cload(box, tools, "--mode", "probe", "--group", "224.3.29.71")
        code_two, two = cload(box, tools, "--mode", "probe", "--group",
                              "224.3.29.71,239.20.0.1")
    finally:
        stopped(echo)
    assert (code_one, one["answered"]) == (0, 1) and one["all_ms"] >= 0
    assert (code_two, two["answered"], two["all_ms"]) == (1, 1, -1)
