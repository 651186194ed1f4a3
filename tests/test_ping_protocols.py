"""`mcast-echo ping --protocol ssmping|rfc6450 HOST` against real responders (issue 10).

The responders run in a netlab Host on a veth pair (IPv4 and IPv6): Debian's ssmpingd
(bounded by `timeout`, ended by its PID) and `mcast-echo serve` with `ssmping: {}`.
ping runs in the test's own namespace; every run is bounded by -c and a timeout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from daemonproc import DaemonProcess
from mcast_echo.ping import dialects
from mcast_echo.wire import rfc6450, ssmping
from netlab import Host, cabled_host
from waiting import wait_until

FAST = ["-n", "-i", "0.2", "-W", "1"]
_labs = 0
needs_ssmpingd = pytest.mark.skipif(shutil.which("ssmpingd") is None,
                                    reason="needs Debian's ssmping package (apt install ssmping)")


pytestmark = pytest.mark.usefixtures("no_config_file")


@pytest.fixture
def lab():
    """The responder host on a veth: 10.71.N.2 / fd71:N::2 there, .1 / ::1 here."""
    global _labs
    _labs += 1
    with cabled_host(f"pp{_labs}", f"vp{_labs}", f"10.71.{_labs}", f"fd71:{_labs}") as host:
        yield host, _labs


def address(n: int, family: str) -> str:
    return f"10.71.{n}.2" if family == "4" else f"fd71:{n}::2"


def ping(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcast_echo", "ping", *args],
                          capture_output=True, text=True, timeout=timeout)


def wait_for_port(host: Host, port: int, proc: subprocess.Popen) -> None:
    """Until something in *host* holds UDP *port* (5 s at most)."""
    def listening() -> bool:
        assert proc.poll() is None, "the responder exited"
        return bool(host.run(["ss", "-Hnul", f"sport = :{port}"]).stdout.strip())

    wait_until(listening, 5, f"listener on UDP {port} in {host.name}", step=0.05)


@pytest.fixture
def ssmpingd(lab):
    """Debian's ssmpingd in the lab host, bounded by timeout, ended by its PID."""
    host, n = lab
    proc = host.popen(["timeout", "120", "ssmpingd"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    try:
        wait_for_port(host, ssmping.PORT, proc)
        yield host, n
    finally:
        proc.terminate()  # timeout passes SIGTERM on to ssmpingd
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def listener(lab, write_config):
    """`mcast-echo serve` with its ssmping/RFC 6450 listener, in the lab host."""
    host, n = lab
    daemon = DaemonProcess(write_config("group: 239.71.0.1\ninterface: eth0\nssmping: {}\n"),
                           host=host)
    try:
        daemon.wait_for("ready:")
        yield host, n
    finally:
        daemon.kill()


# --- against Debian's ssmpingd ---------------------------------------------------------------

@needs_ssmpingd
@pytest.mark.parametrize("family", ["4", "6"])
def test_ssmping_against_debians_ssmpingd(ssmpingd, family):
    _, n = ssmpingd
    server = address(n, family)
    done = ping("--protocol", "ssmping", "-c", "3", *FAST, server)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    group = "232.43.211.234" if family == "4" else "ff3e::4321:1234"
    assert lines[0].startswith(f"SSMPING {server} port 4321 via vp{n} "), lines[0]
    assert f"replies to {group} (source-specific, joined for {server})" in lines[0]
    replies = [line for line in lines if f" bytes from {server} " in line]
    unicast = [line for line in replies if not line.endswith("(group)")]
    multicast = [line for line in replies if line.endswith("(group)")]
    assert len(unicast) == 3 and len(multicast) == 3, done.stdout
    assert all(f" bytes from {server} hops=0: seq=" in line and " time=" in line
               for line in replies), done.stdout
    assert f"--- {server}:4321 ssmping statistics ---" in done.stdout \
        or f"--- [{server}]:4321 ssmping statistics ---" in done.stdout
    summary = done.stdout.split("statistics ---")[1]
    assert " unicast hops=0: 3 transmitted, 3 received, 0% loss, rtt" in summary, summary
    assert f" multicast {group} hops=0: 3 transmitted, 3 received, 0% loss, rtt" in summary
    assert "3 probes transmitted, 1 responder" in summary


@needs_ssmpingd
def test_ssmping_json_and_textfile_against_ssmpingd(ssmpingd, tmp_path):
    _, n = ssmpingd
    textfile = tmp_path / "probe.prom"
    done = ping("--protocol", "ssmping", "-4", "-c", "3", "--json", *FAST,
                "--prometheus-textfile", str(textfile), address(n, "4"))
    assert done.returncode == 0, done.stderr
    metrics = textfile.read_text()
    assert (f'mcast_echo_probe_up{{group="232.43.211.234",name="",port="4321",'
            f'responder="{address(n, "4")}"}} 1.0') in metrics, metrics
    assert 'mcast_echo_probe_loss_ratio{group="232.43.211.234"' in metrics
    assert 'mcast_echo_probe_success{group="232.43.211.234",port="4321"} 1.0' in metrics
    document = json.loads(done.stdout)
    assert document["ok"] is True and document["responder_count"] == 1
    assert document["settings"]["protocol"] == "ssmping"
    assert document["settings"]["host"] == address(n, "4")
    assert document["settings"]["group"] == "232.43.211.234"
    assert document["settings"]["port"] == 4321
    (responder,) = document["responders"]
    assert responder["address"] == address(n, "4") and responder["via"] == "both"
    assert responder["received"] == 3 and responder["loss_percent"] == 0
    for path in ("unicast", "multicast"):
        assert responder["paths"][path]["received"] == 3, responder
        assert responder["paths"][path]["hops"] == 0
        assert responder["paths"][path]["rtt_ms"]["min"] > 0
    assert responder["without_trailer"] is None


@needs_ssmpingd
def test_expect_2_with_one_responder_exits_1(ssmpingd):
    _, n = ssmpingd
    done = ping("--protocol", "ssmping", "-c", "2", "--expect", "2", *FAST, address(n, "4"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 probes transmitted, 1 responder (expected at least 2)" in done.stdout


# --- against mcast-echo's own listener, both dialects, both families -------------------------

@pytest.mark.parametrize("protocol", ["ssmping", "rfc6450"])
@pytest.mark.parametrize("family", ["4", "6"])
def test_both_dialects_against_mcast_echo_serve(listener, protocol, family):
    _, n = listener
    server = address(n, family)
    done = ping("--protocol", protocol, "-c", "3", "--json", *FAST, server)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    (responder,) = document["responders"]
    assert responder["address"] == server
    assert responder["server"].startswith("mcast-echo"), responder
    assert responder["paths"]["unicast"]["received"] == 3, responder
    assert responder["paths"]["multicast"]["received"] == 3, responder
    assert responder["paths"]["multicast"]["hops"] == 0
    group = "232.43.211.234" if family == "4" else "ff3e::4321:1234"
    assert document["settings"]["group"] == group  # rfc6450: the one its session got


def test_rfc6450_text_output_names_the_session_group(listener):
    _, n = listener
    done = ping("--protocol", "rfc6450", "-c", "2", *FAST, address(n, "4"))
    assert done.returncode == 0, done.stdout + done.stderr
    banner = done.stdout.splitlines()[0]
    assert banner.startswith(f"RFC6450 PING 10.71.{n}.2 port 4321 via vp{n} "), banner
    assert "replies to 232.43.211.234 (source-specific" in banner and "server mcast-echo" \
        in banner, banner
    assert f"--- 10.71.{n}.2:4321 rfc6450 ping statistics ---" in done.stdout


def test_rfc6450_refused_group_is_exit_2_with_a_message(listener):
    _, n = listener
    done = ping("--protocol", "rfc6450", "-c", "2", *FAST, address(n, "4"), "239.9.9.9")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refused the session: its Server Response offers no group (asked for " \
           "239.9.9.9)" in done.stderr
    assert "Traceback" not in done.stderr


def test_asm_group_not_served_gets_unicast_only_and_exit_1(listener):
    """asmping-style: a group the responder does not serve gets only unicast replies."""
    _, n = listener
    done = ping("--protocol", "ssmping", "-c", "2", *FAST, address(n, "4"), "239.1.2.234")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "replies to 239.1.2.234 (any-source)" in done.stdout
    assert " unicast hops=0: 2 transmitted, 2 received, 0% loss" in done.stdout
    assert " multicast 239.1.2.234 hops=?: 2 transmitted, 0 received, 100% loss" in done.stdout
    assert "hint: multicast: unicast replies came but none to 239.1.2.234" in done.stdout


# --- nobody there, and bad arguments -------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["ssmping", "rfc6450"])
def test_a_host_that_does_not_answer_exits_1_with_a_hint(lab, protocol):
    _, n = lab
    done = ping("--protocol", protocol, "-c", "2", "-i", "0.2", "-W", "0.5", address(n, "4"))
    assert done.returncode == 1, done.stdout + done.stderr
    hints = [line for line in done.stdout.splitlines() if line.startswith("hint: ")]
    assert hints and hints[0].startswith("hint: responder: "), done.stdout
    assert f"10.71.{n}.2" in hints[0] and "4321" in hints[0]
    status = ping("--protocol", protocol, "-c", "1", "-i", "0.2", "-W", "0.3", "--json",
                  address(n, "4"))
    document = json.loads(status.stdout)
    assert status.returncode == 1 and document["ok"] is False and document["hints"]


def test_a_name_for_host_and_dash_p():
    """HOST may be a name (here, from /etc/hosts: localhost) and :PORT or -p."""
    done = ping("--protocol", "ssmping", "-4", "-c", "1", "-W", "0.3", "--json", "localhost:4999")
    document = json.loads(done.stdout)
    assert document["settings"]["host"] == "127.0.0.1" and document["settings"]["port"] == 4999
    done = ping("--protocol", "rfc6450", "-p", "9903", "-c", "1", "-W", "0.3", "--json",
                "127.0.0.1")
    assert json.loads(done.stdout)["settings"]["port"] == 9903


@pytest.mark.parametrize("args, message", [
    (["--protocol", "ssmping"], "--protocol ssmping pings one responder: name it"),
    (["--protocol", "ssmping", "232.1.1.1"], "232.1.1.1 is a multicast group"),
    (["--protocol", "ssmping", "-6", "10.0.0.1"], "-6 and 10.0.0.1 (an IPv4 address) disagree"),
    (["--protocol", "ssmping", "10.0.0.1", "10.0.0.2"], "GROUP 10.0.0.2 is not a multicast"),
    (["--protocol", "ssmping", "10.0.0.1", "ff3e::1"], "GROUP ff3e::1 is an IPv6 group and "
                                                       "HOST an IPv4 address"),
    (["--protocol", "ssmping", "-s", "100", "10.0.0.1"], "-s sets the size of mcast-echo"),
    (["--protocol", "ssmping", "-p", "1", "10.0.0.1:2"], "-p 1 and :2 in HOST disagree"),
    (["--protocol", "bogus"], "invalid choice: 'bogus'"),
    (["10.0.0.1"], "--protocol ssmping 10.0.0.1"),
    (["224.1.1.1", "239.1.1.1"], "a second argument (GROUP) is for --protocol ssmping"),
])
def test_bad_arguments_exit_64(args, message):
    done = ping(*args)
    assert done.returncode == 64, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_name_that_does_not_resolve_is_exit_2():
    done = ping("--protocol", "ssmping", "-c", "1", "no-such-host.invalid")
    assert done.returncode == 2, done.stderr
    assert "cannot look up no-such-host.invalid" in done.stderr


# --- the dialects without a network ----------------------------------------------------------

def test_ssmping_replies_of_another_client_are_not_ours():
    group = ssmping.DEFAULT_GROUPS[4]
    ours, theirs = dialects.Ssmping(7, group), dialects.Ssmping(8, group)
    reply = b"A" + ours.request(5, time.time_ns())[1:]
    assert ours.reply(reply).seq == 5
    assert theirs.reply(reply) is None
    assert ours.reply(ours.request(5, 0)) is None  # a request, not a reply
    assert ours.reply(b"A\x00\x01") is None  # malformed


def test_rfc6450_stop_ends_the_run_and_a_late_init_answer_does_not():
    client = dialects.Rfc6450(9, None, ipv6=False)
    message = rfc6450.parse(client.init())
    group_option = rfc6450.encode_option(rfc6450.GROUP, bytes([0, 1, 232, 43, 211, 234]))
    assert client.session_response(rfc6450.server_response(message, group_option), "h")
    assert str(client.group) == "232.43.211.234"
    late = rfc6450.server_response(message, group_option)
    assert client.reply(late) is None
    request = rfc6450.parse(client.request(3, time.time_ns()))
    with pytest.raises(dialects.SessionRefused, match="told us to stop"):
        client.reply(rfc6450.server_response(request))
