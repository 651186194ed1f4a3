"""What users of ping bring to `mcast-echo ping`, and honest failures (#13: 6-8, 11, 13).

Exit statuses of every subcommand, ping's own advice on a config file, a JSON document on
every error, write errors, hints when nobody answers, the rate-limit note, -w, -D,
SIGQUIT and the summary's grammar. Responders are a plain echo server on a namespaced host.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mcast_echo.ping import command as ping_command
from mcast_echo.ping import options as ping_options
from mcast_echo.ping import summary, tally
from mcast_echo.ping.settings import Settings
from netlab import Lan

GROUP, PORT = "224.3.29.71", 9999


pytestmark = pytest.mark.usefixtures("no_config_file")


def mcast_echo(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcast_echo", *args], capture_output=True,
                          text=True, timeout=timeout, **kw)


# --- 7. exit statuses: 64 for bad arguments, with the subcommand's own usage --------------------

@pytest.mark.parametrize("command", ["serve", "check-config", "limits", "ping"])
def test_bad_arguments_exit_64_with_the_subcommands_usage(command):
    done = mcast_echo(command, "--bogus")
    assert done.returncode == 64, done.stderr
    assert done.stderr.startswith(f"usage: mcast-echo {command} "), done.stderr
    assert done.stderr.endswith(f"mcast-echo {command}: error: unrecognized arguments: "
                                "--bogus\n")


def test_a_bad_option_value_and_an_unknown_command_exit_64():
    done = mcast_echo("serve", "--log-level", "loud")
    assert done.returncode == 64 and done.stderr.startswith("usage: mcast-echo serve ")
    done = mcast_echo("bogus")
    assert done.returncode == 64 and "invalid choice: 'bogus'" in done.stderr
    assert mcast_echo("--version").returncode == 0


# --- #20.5: ping's habits: -c is ping(8)'s count, -i below 0.2 s is root's ----------------------

def test_dash_c_with_a_config_file_points_to_dash_dash_config():
    done = mcast_echo("ping", "-c", "ok.yaml")
    assert done.returncode == 64
    assert done.stderr.endswith("mcast-echo ping: error: argument -c: 'ok.yaml' is not a count: "
                                "in ping, -c is the number of probes (as in ping(8)); for a "
                                "config file use --config ok.yaml\n"), done.stderr
    assert mcast_echo("ping", "-c", "many").stderr.endswith("'many' is not an integer\n")


def test_an_interval_below_a_fifth_of_a_second_is_roots():
    """As ping(8): a user other than root may not flood (-i 0 sent 40-80k probes a second)."""
    from loadlab import AsUser, can_become_another_user

    if not can_become_another_user():
        pytest.skip("no other user to run ping as (setpriv, or a readable runtime, is missing)")
    nobody = AsUser(None)
    readable = tempfile.TemporaryDirectory(dir="/tmp")  # pytest's tmp_path is root's alone
    os.chmod(readable.name, 0o755)
    config = Path(readable.name, "ping.yaml")
    config.write_text("{}\n")
    config.chmod(0o644)
    for interval, status in (("0", 64), ("0.19", 64), ("0.2", 1)):
        done = subprocess.run(nobody.command([sys.executable, "-m", "mcast_echo", "ping", "-i",
                                              interval, "-c", "1", "-W", "0", "--config",
                                              str(config), "-I", "lo", "239.9.9.9"]),
                              env=nobody.environ(), capture_output=True, text=True, timeout=30)
        assert done.returncode == status, (interval, done.stderr)
    assert done.returncode == 1  # -i 0.2 probed (nobody answered)
    done = subprocess.run(nobody.command([sys.executable, "-m", "mcast_echo", "ping", "-i", "0"]),
                          env=nobody.environ(), capture_output=True, text=True, timeout=30)
    assert done.stderr.endswith("argument -i: 0 is below 0.2 s, the shortest interval for a user "
                                "other than root (as in ping(8)): it would flood the group; use "
                                "-i 0.2 or more, or run as root\n"), done.stderr
    root = mcast_echo("ping", "-i", "0", "-c", "1", "-W", "0", "-I", "lo", "239.9.9.9")
    assert root.returncode == 1, root.stderr  # root may
    readable.cleanup()


def test_a_malformed_serve_interface_is_usage_not_a_config_error(tmp_path):
    """#20.6: exit 64 (bad usage, as the man page's table says), not 78 (EX_CONFIG)."""
    config = tmp_path / "ok.yaml"
    config.write_text("group: 239.1.1.1\n")
    done = mcast_echo("serve", "-c", str(config), "--interface", "bad name")
    assert done.returncode == 64, done.stderr
    assert done.stderr.startswith("usage: mcast-echo serve ")
    assert done.stderr.endswith("argument --interface: 'bad name' is not a valid interface name "
                                "(1-15 characters, no spaces or slashes, e.g. eth0)\n")
    assert mcast_echo("serve", "-c", str(config), "--interface", "10.0.0.300").returncode == 64


# --- 6. ping's own advice on its config file ----------------------------------------------------

def test_a_missing_config_gets_pings_advice_not_the_daemons():
    done = mcast_echo("ping", "--config", "/nonexistent.yaml", "-c", "1")
    assert done.returncode == 2
    assert done.stderr == ("mcast-echo ping: /nonexistent.yaml: no such file (pass --config "
                           "PATH, or name the group: mcast-echo ping GROUP[:PORT])\n")
    assert "-c PATH" not in done.stderr


def test_an_unreadable_config_talks_of_you_not_the_daemons_user(monkeypatch, tmp_path, capsys):
    path = tmp_path / "secret.yaml"
    path.write_text("group: 224.3.29.71\n")
    real_open = os.open

    def refuse(name, *args, **kw):
        if str(name) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_open(name, *args, **kw)

    monkeypatch.setattr(os, "open", refuse)
    parser = argparse.ArgumentParser()
    ping_options.add_arguments(parser)
    assert ping_command.run(parser.parse_args(["--config", str(path), "-c", "1"])) == 2
    err = capsys.readouterr().err
    assert err == (f"mcast-echo ping: {path}: permission denied: ping reads it as you (make it "
                   "readable, pass --config PATH to a copy, or name the group: mcast-echo ping "
                   "GROUP)\n")


def test_a_directory_or_a_device_as_config(tmp_path):
    done = mcast_echo("ping", "--config", str(tmp_path), "-c", "1")
    assert done.returncode == 2
    assert done.stderr == (f"mcast-echo ping: {tmp_path}: is a directory (pass --config PATH "
                           "to a YAML file)\n")
    done = mcast_echo("ping", "--config", "/dev/null", "-c", "1")
    assert done.returncode == 2
    assert done.stderr == ("mcast-echo ping: /dev/null: not a regular file (a FIFO, socket or "
                           "device): pass --config PATH to a YAML file\n")


# --- 8. --json on errors, write errors ----------------------------------------------------------

@pytest.mark.parametrize("args, status, error", [
    (["-I", "nosuch0", "-c", "1"], 2, "-I nosuch0: no such interface"),
    (["--config", "/nonexistent.yaml"], 2, "/nonexistent.yaml: no such file"),
    (["-S", "10.0.0.1", "224.1.1.1"], 64, "-S 10.0.0.1: 224.1.1.1 is an any-source group"),
    (["-s", "1"], 64, "argument -s: 1 is out of range 32..65507"),
    (["--bogus"], 64, "unrecognized arguments: --bogus"),
])
def test_json_errors_are_a_document_with_ok_false(args, status, error):
    with Lan():
        done = mcast_echo("ping", "--json", *args)
    assert done.returncode == status, done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] is False and document["exit_status"] == status
    assert error in document["error"] and error in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["-c", "2", "-i", "0.05", "-W", "0.1"],
                                  ["--json", "-c", "1", "-W", "0.1"]])
def test_a_full_disk_on_stdout_is_exit_2_and_one_line(args):
    with Lan(), open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "mcast_echo", "ping", *args], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == "mcast-echo ping: cannot write the output: No space left on device\n"


# --- 11. where probes leave from, hints, the rate-limit note ------------------------------------

def test_nobody_answers_gives_hints():
    with Lan() as lan:
        done = mcast_echo("ping", "-c", "1", "-W", "0.2", "--no-loopback")
        status, document = (lambda d: (d.returncode, json.loads(d.stdout)))(
            mcast_echo("ping", "--json", "-c", "1", "-W", "0.2", "-t", "4"))
    assert done.returncode == 1
    assert f"via {lan.bridge} (10.77.0.1): 192-byte probes" in done.stdout
    hints = [line for line in done.stdout.splitlines() if line.startswith("hint: ")]
    assert hints == [
        f"hint: route: probes followed the route to {GROUP}, out of {lan.bridge} (10.77.0.1): "
        "if the responders are on another link, pass -I IFACE",
        f"hint: ttl: 1 (from {os.environ['MCAST_ECHO_CONFIG']}'s `ttl:`) stays on this link; "
        "responders behind a multicast router need -t 2 or more",
        f"hint: port: responders must serve {GROUP} on port {PORT} (their `group:` and `port:`; "
        "mcast-echo check-config shows them)",
        f"hint: firewall: UDP to {GROUP} port {PORT} must leave here and reach them, and UDP "
        f"from port {PORT} must come back in",
        f"hint: allow: a responder whose `allow:` leaves out the address the probes come from "
        f"({lan.bridge} (10.77.0.1)) drops them (its log says \"source not in 'allow'\")",
        "hint: loopback: --no-loopback: a responder on this host does not hear the probes"]
    assert status == 1 and document["sent_from"] == f"{lan.bridge} (10.77.0.1)"
    assert [h.split(":")[0] for h in document["hints"]] == ["route", "port", "firewall", "allow"]


def _hints(**changes) -> list[str]:
    """The hints of a run that sent 3 probes and heard nobody, with these settings."""
    return summary.hints(_settings(**changes), "eth0 (10.0.0.1)", tally.ResponderTable(PORT),
                         tally.RunCounts(transmitted=3))


@pytest.mark.parametrize("group", ["224.0.0.251", "ff02::4242", "ff12::1"])
@pytest.mark.parametrize("ttl", [1, 8])
def test_a_link_local_group_is_never_routed_at_any_ttl(group, ttl):
    """#20.3: 224.0.0.0/24 and link-scope IPv6 groups: a larger -t would not help."""
    (hint,) = [h for h in _hints(group=group, ttl=ttl) if h.startswith("ttl: ")]
    assert hint == (f"ttl: {group} is link-local: no router forwards it, whatever the TTL; "
                    "responders must be on the link the probes leave by")
    assert not any(h.startswith("ttl: ") for h in _hints(group="224.0.1.1", ttl=8))


def test_a_ttl_from_the_config_is_named_as_such():
    """#20.3: the hint named -t 1 when the 1 came from the config's `ttl:`."""
    (hint,) = [h for h in _hints(ttl=1, ttl_from="/etc/mcast-echo.yaml's `ttl:`",
                                 config="/etc/mcast-echo.yaml") if h.startswith("ttl: ")]
    assert hint == ("ttl: 1 (from /etc/mcast-echo.yaml's `ttl:`) stays on this link; responders "
                    "behind a multicast router need -t 2 or more")
    (hint,) = [h for h in _hints(ttl=1) if h.startswith("ttl: ")]
    assert hint.startswith("ttl: -t 1 stays on this link")
    (hint,) = [h for h in _hints(ttl=0, ttl_from="the default") if h.startswith("ttl: ")]
    assert hint == "ttl: 0 (from the default) keeps probes on this host; pass -t 1 or more"


def test_the_ttl_from_the_config_file_reaches_the_hint(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"group: {GROUP}\nttl: 1\n")
    with Lan():
        done = mcast_echo("ping", "--config", str(config), "-c", "1", "-W", "0.1")
        given = mcast_echo("ping", "--config", str(config), "-c", "1", "-W", "0.1", "-t", "1")
    assert f"hint: ttl: 1 (from {config}'s `ttl:`) stays on this link" in done.stdout, done.stdout
    assert "hint: ttl: -t 1 stays on this link" in given.stdout, given.stdout


def _settings(**changes) -> Settings:
    values = dict(group=GROUP, port=PORT, interface=None, source=None, count=None,
                  interval=1.0, size=192, ttl=1, loopback=True, wait=1.0, deadline=None,
                  expect=1, quiet=False, json=False, numeric=True, timestamps=False,
                  config=None)
    values.update(changes)
    return Settings(**values)


def _table_with(received: int) -> tally.ResponderTable:
    table = tally.ResponderTable(PORT)
    table.lookup("10.0.0.2", PORT).received = received
    return table


@pytest.mark.parametrize("interval, received, noted", [
    (0.0005, 2500, True), (0.0, 2500, True), (0.0005, 3000, False), (0.001, 2500, False)])
def test_loss_from_probing_faster_than_the_rate_limit_is_noted(interval, received, noted):
    notes = summary.rate_note(_settings(interval=interval), _table_with(received), 3000)
    assert bool(notes) == noted
    if noted:
        assert "faster than a responder's default rate limit of 1,000/s per source" in notes[0]
        assert "-i 0.001 or slower stays under it" in notes[0]


# --- 13. ping habits: -w, -D, SIGQUIT, grammar ---------------------------------------------------

def test_dash_w_ends_the_run_at_its_deadline():
    with Lan():
        started = time.monotonic()
        done = mcast_echo("ping", "-w", "0.6", "-i", "0.1", "--json")
        took = time.monotonic() - started
    document = json.loads(done.stdout)
    assert done.returncode == 1
    assert 4 <= document["transmitted"] <= 7 and document["settings"]["deadline"] == 0.6
    assert 0.55 <= document["duration_s"] < 1.0 and took < 10


def test_one_probe_one_responder_in_the_singular_and_dash_d(plain_echo):
    done = mcast_echo("ping", "-c", "1", "-D", "-W", "0.5", "-n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("\n1 probe transmitted, 1 responder")
    (line,) = [line for line in done.stdout.splitlines() if " bytes from " in line]
    stamp = re.match(r"^\[(\d+\.\d{6})\] 192 bytes from 10\.77\.0\.9: seq=0 time=", line)
    assert stamp and abs(float(stamp.group(1)) - time.time()) < 30, line


def test_sigquit_prints_the_statistics_so_far_and_goes_on(plain_echo):
    proc = subprocess.Popen([sys.executable, "-m", "mcast_echo", "ping", "-i", "0.05", "-n",
                             "-w", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().startswith("MCAST-ECHO PING")
        for line in proc.stdout:
            if "seq=3 " in line:
                break
        proc.send_signal(signal.SIGQUIT)
        for line in proc.stdout:  # it goes on after the interim statistics
            if "seq=8 " in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    interim = err.splitlines()
    assert re.match(r"--- \S+ mcast-echo ping statistics so far ---$", interim[0]), err
    assert re.match(r"10\.77\.0\.9: \d+ transmitted, \d+ received, ", interim[1]), err
    assert re.match(r"\d+ probes transmitted, 1 responder$", interim[2]), err
    assert out.rstrip().endswith("1 responder") and "mcast-echo ping statistics" in out


def test_one_copy_in_the_singular():
    stats = tally.ResponderTable(PORT).lookup("10.0.0.2", PORT)
    stats.received, stats.copies, stats.first_path = 2, 1, "unicast"
    stats._path_seen.update(unicast=None, group=None)  # echoes came both ways
    assert "(unicast and group, +1 copy)" in stats.summary_line(2)
    stats.copies = 2
    assert "(unicast and group, +2 copies)" in stats.summary_line(2)


@pytest.mark.parametrize("group, what", [("224.0.0.1", "the all-hosts group of the link"),
                                         ("ff02::1", "the all-nodes group of the link")])
def test_a_reserved_group_gets_a_word_when_nobody_answers(group, what):
    (hint,) = [h for h in _hints(group=group) if h.startswith("group: ")]
    assert hint.startswith(f"group: {group} is {what}")
    assert "a responder's config refuses it" in hint
    assert not any(h.startswith("group: ") for h in _hints())
