"""The Debian package under a real systemd, driven the way an admin drives it.

`make system-test` (root) builds the .deb, then runs this module: tests/system/sdlab boots
systemd as PID 1 in throwaway namespaces on an overlay of / (tmpfs upper layer, own /run, /tmp,
/dev and network namespace), the .deb is installed there with dpkg, and each test below is one
step of an admin's day, in order: install, start, echo, journal, reload, stop, crash, bad config,
watchdog, sandbox, security score, upgrade, removal. The container is always torn down, and the
teardown fails the run if any process, mount or cgroup of it is left.

Multicast never touches this machine's interfaces: the daemon and the clients live in the
container's network namespace (veth mc0 10.99.0.1) and its netns "peer" (mc0p 10.99.0.2).
Skipped unless MCAST_ECHO_SYSTEM_TEST=1 (plain `make test` runs inside `unshare --net`, where
nothing of this can work).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SDLAB = HERE / "sdlab"
CLIENT = HERE / "echo_client.py"

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.environ.get("MCAST_ECHO_SYSTEM_TEST") != "1",
                       reason="boots systemd as PID 1 in namespaces: run `make system-test` "
                              "as root"),
]

UNIT = "mcast-echo.service"
CONFIG = "/etc/mcast-echo.yaml"
GROUP, PORT = "224.3.29.71", 9999  # the shipped defaults
OTHER_GROUP = "239.1.2.3"
INSIDE_ADDR, PEER_ADDR = "10.99.0.1", "10.99.0.2"  # set up by `sdlab up --peer`
SECONDARY_ADDR = "10.99.0.9"  # added beside INSIDE_ADDR on mc0 by a test
DYNAMIC_UIDS = range(61184, 65520)  # systemd's DynamicUser= range
SECURITY_LIMIT = 1.5


class Lab:
    """One sdlab container: run commands inside it, and the admin's verbs on top."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.env = {**os.environ, "SDLAB_STATE": str(state), "SDLAB_NAME": "mcast-echo",
                    "TERM": "dumb"}
        self.client_path = "/root/echo_client.py"
        self.deb = ""  # path of the .deb inside
        self.version = ""  # the package's version
        self.shipped_config = ""  # /etc/mcast-echo.yaml as installed, read by the first test

    def sdlab(self, *args: str, stdin: Optional[str] = None, timeout: float = 120,
              check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(SDLAB), *args], env=self.env, input=stdin, text=True,
                              capture_output=True, timeout=timeout,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"sdlab {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def run(self, *argv: str, check: bool = True, timeout: float = 60,
            stdin: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run *argv* inside the container (as root, in its namespaces)."""
        return self.sdlab("sh", *argv, check=check, timeout=timeout, stdin=stdin)

    def out(self, *argv: str) -> str:
        return self.run(*argv).stdout.strip()

    def write(self, path: str, text: str) -> None:
        self.run("sh", "-c", 'cat > "$1"', "sh", path, stdin=text)

    # ------------------------------------------------------------- systemd
    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = self.run("systemctl", "--no-pager", *args, check=False)
        if check and done.returncode != 0:  # say why, as an admin would look it up
            status = self.run("systemctl", "--no-pager", "status", UNIT, check=False).stdout
            raise AssertionError(f"systemctl {' '.join(args)} exited {done.returncode}: "
                                 f"{done.stderr}\n{status}\n{self.journal('-n', '30')}")
        return done

    def show(self, *props: str) -> dict[str, str]:
        args = [f"--property={p}" for p in props]
        lines = self.out("systemctl", "show", *args, UNIT).splitlines()
        return dict(line.split("=", 1) for line in lines)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    # ------------------------------------------------------------- journal
    def now(self) -> str:
        """The container's clock, for `journalctl --since` (its 252 drops -p after a cursor)."""
        return "@" + self.out("date", "+%s.%6N")

    def journal(self, *args: str, since: Optional[str] = None) -> str:
        where = [f"--since={since}"] if since else []
        return self.run("journalctl", "--no-pager", "-q", "-u", UNIT, *where, *args).stdout

    # ------------------------------------------------------------- network
    def echo(self, group: str, *, peer: bool = False, sizes: str = "0,1,1400",
             timeout: float = 2.0) -> dict:
        """Send to group:PORT from inside (or from the peer netns); what came back."""
        argv = ["python3", self.client_path, group, str(PORT), "--sizes", sizes,
                "--timeout", str(timeout), "--source", PEER_ADDR if peer else INSIDE_ADDR]
        if peer:
            argv = ["ip", "netns", "exec", "peer", *argv]
        return json.loads(self.out("/usr/bin/env", *argv))

    def joined(self, group: str) -> bool:
        """Is *group* in the container's /proc/net/igmp (kernel byte order, hex)?"""
        wanted = socket.inet_aton(group)[::-1].hex().upper()
        return wanted in self.out("cat", "/proc/net/igmp")


def wait_for(what: str, check: Callable[[], object], timeout: float = 10.0,
             every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def config(**keys: object) -> str:
    """A config file: the shipped defaults, with *keys* changed."""
    values = {"group": GROUP, "port": PORT, **keys}
    return "".join(f"{key}: {value}\n" for key, value in values.items())


@pytest.fixture(scope="module")
def lab():
    debs = [os.environ["MCAST_ECHO_DEB"]] if "MCAST_ECHO_DEB" in os.environ else \
        sorted(map(str, (ROOT / "build/deb").glob("mcast-echo_*_all.deb")))
    assert debs and Path(debs[-1]).is_file(), "no package: build it with `make deb`"
    deb = Path(debs[-1])
    parent = ROOT / "build" / "system-test"
    parent.mkdir(parents=True, exist_ok=True)
    _down_leftovers(parent)
    state = Path(tempfile.mkdtemp(prefix="sdlab-", dir=parent))
    (state / "owner").write_text(str(os.getpid()))
    box = Lab(state)
    box.deb = f"/root/{deb.name}"
    box.version = subprocess.run(["dpkg-deb", "--field", str(deb), "Version"], check=True,
                                 capture_output=True, text=True).stdout.strip()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a stopped run still tears down
    try:
        box.sdlab("up", "--peer")
        # This machine's image carries Docker's policy-rc.d ("exit 101"), which stops every
        # maintainer script from starting or stopping services; a Debian host has none.
        box.run("rm", "-f", "/usr/sbin/policy-rc.d")
        box.sdlab("cp", str(deb), box.deb)
        box.sdlab("cp", str(CLIENT), box.client_path)
        yield box
    finally:
        down = box.sdlab("down", check=False)
        print(down.stderr)
        assert down.returncode == 0 and "down: clean" in down.stderr, down.stderr
        shutil.rmtree(state)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _down_leftovers(parent: Path) -> None:
    """Tear down containers that killed earlier runs left behind (a run still going is kept)."""
    for state in parent.glob("sdlab-*"):
        try:
            owner = int((state / "owner").read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and Path(f"/proc/{owner}").exists():
            continue
        if (state / "mcast-echo").is_dir():
            down = Lab(state).sdlab("down", check=False)
            assert down.returncode == 0, f"{state}: left over and not removable:\n{down.stderr}"
        shutil.rmtree(state)


@pytest.fixture
def running(lab):
    """The service running on the shipped config, where each step after the install begins."""
    assert lab.shipped_config, "the package is not installed (see the first test)"
    changed = lab.out("cat", CONFIG) != lab.shipped_config
    if changed:
        lab.write(CONFIG, lab.shipped_config + "\n")
    lab.systemctl("reset-failed", UNIT, check=False)
    if lab.show("ActiveState")["ActiveState"] != "active":
        lab.systemctl("start", UNIT)
    elif changed:
        lab.systemctl("restart", UNIT)
    return lab


# ------------------------------------------------------------------------- 1. install and start
def test_install_leaves_the_service_off(lab):
    done = lab.run("dpkg", "-i", lab.deb)
    assert f"Setting up mcast-echo ({lab.version})" in done.stdout
    # decided: installing neither enables nor starts a network responder
    assert lab.run("systemctl", "is-enabled", UNIT, check=False).stdout.strip() == "disabled"
    assert lab.run("systemctl", "is-active", UNIT, check=False).stdout.strip() == "inactive"
    assert CONFIG in lab.out("dpkg-query", "-W", "-f=${Conffiles}", "mcast-echo")
    # where Debian 12 and 13 both look; nothing in /lib/systemd (Debian 13's purge warned)
    files = lab.out("dpkg", "-L", "mcast-echo").splitlines()
    assert "/usr/lib/systemd/system/mcast-echo.service" in files
    assert not [f for f in files if f.startswith("/lib/")], files
    assert lab.show("FragmentPath")["FragmentPath"].endswith("/systemd/system/mcast-echo.service")
    for page in ("/usr/share/man/man8/mcast-echo.8.gz", "/usr/share/man/man5/mcast-echo.yaml.5.gz"):
        lab.run("test", "-s", page)
    assert lab.out("head", "-n1", "/usr/bin/mcast-echo") == "#!/usr/bin/python3"
    assert lab.out("mcast-echo", "--version") == f"mcast-echo {lab.version}"
    lab.run("mcast-echo", "check-config")  # the shipped file is valid
    lab.shipped_config = lab.out("cat", CONFIG)


def test_start_returns_after_ready_with_status(lab):
    assert lab.show("Type")["Type"] == "notify"
    started = time.monotonic()
    lab.systemctl("start", UNIT)
    elapsed = time.monotonic() - started
    # `systemctl start` of a Type=notify unit returns on READY=1: by then the group is joined
    state = lab.show("ActiveState", "SubState", "StatusText", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    assert lab.joined(GROUP), "READY=1 came before the join"
    assert lab.out("systemctl", "is-active", UNIT) == "active"
    assert GROUP in state["StatusText"]
    status = lab.systemctl("status", UNIT).stdout
    assert f'Status: "{GROUP}' in status, status
    print(f"systemctl start -> READY=1 in {elapsed:.2f}s; STATUS={state['StatusText']}")


# ------------------------------------------------------------------------- 2. echoes
def test_echoes_inside_and_from_another_host(running):
    inside = running.echo(GROUP)
    assert inside["echoed"] == inside["sent"], inside
    assert {tuple(peer)[0] for peer in inside["from"]} == {INSIDE_ADDR}
    peer = running.echo(GROUP, peer=True)
    assert peer["echoed"] == peer["sent"], peer
    # the echo is unicast from the responder's address on the link
    assert {tuple(p)[0] for p in peer["from"]} == {INSIDE_ADDR}


@pytest.mark.parametrize("interface", ["mc0", INSIDE_ADDR, SECONDARY_ADDR])
def test_interface_by_name_or_address_works_in_the_sandbox(running, interface):
    # the unit's sandbox decides which lookups work (ioctls, not netlink), and a
    # secondary (VRRP-style) address is not an interface's primary one
    running.run("ip", "addr", "replace", f"{SECONDARY_ADDR}/24", "dev", "mc0")
    try:
        running.write(CONFIG, config(interface=interface))
        running.systemctl("restart", UNIT)
        assert f"{GROUP}:{PORT} on mc0" in running.show("StatusText")["StatusText"]
        assert running.echo(GROUP, peer=True, sizes="1400")["echoed"] == 1
    finally:
        running.run("ip", "addr", "del", f"{SECONDARY_ADDR}/24", "dev", "mc0")


# ------------------------------------------------------------------------- 3. journal
def test_journal_shows_limits_and_readiness(running):
    log = running.journal("-o", "cat")
    for line in ("receive buffer:", "send buffer:", "IGMP/MLD:", f"joined {GROUP} on mc0",
                 "ready:"):
        assert line in log, f"{line!r} not in the journal:\n{log}"
    # systemd's own line, logged when READY=1 arrived
    assert re.search(r"^Started ", log, re.M), log


def test_capped_receive_buffer_warns_with_the_fix(running):
    rmem_max = int(running.out("cat", "/proc/sys/net/core/rmem_max"))
    wanted = 4 * rmem_max  # rmem_max is not per-netns: ask for more than the host allows
    if wanted > (1 << 31) - 1:
        pytest.skip(f"rmem_max {rmem_max} too large to exceed with a valid recv_buffer")
    mark = running.now()
    running.write(CONFIG, config(recv_buffer=wanted))
    running.systemctl("restart", UNIT)
    fix = f"sysctl -w net.core.rmem_max={wanted}"
    warnings = wait_for("the capped-buffer warning",
                        lambda: fix in (w := running.journal("-p", "warning", "-o", "cat",
                                                             since=mark)) and w)
    assert "receive buffer" in warnings
    assert running.show("ActiveState")["ActiveState"] == "active"  # warn, don't fail


# ------------------------------------------------------------------------- 4. reload
def test_reload_moves_to_another_group(running):
    pid = running.main_pid()
    running.write(CONFIG, config(group=OTHER_GROUP))
    running.systemctl("reload", UNIT)
    wait_for("the new group joined, the old one left",
             lambda: running.joined(OTHER_GROUP) and not running.joined(GROUP))
    assert running.main_pid() == pid, "reload restarted the daemon"
    assert running.echo(OTHER_GROUP)["echoed"] == 3
    assert running.echo(OTHER_GROUP, peer=True)["echoed"] == 3
    assert running.echo(GROUP, sizes="1400", timeout=1.0)["echoed"] == 0, "old group answers"
    assert OTHER_GROUP in running.show("StatusText")["StatusText"]


def test_broken_reload_keeps_serving_and_logs_the_error(running):
    running.write(CONFIG, config(group=OTHER_GROUP))
    running.systemctl("reload", UNIT)
    wait_for("the new group", lambda: running.joined(OTHER_GROUP))
    mark = running.now()
    running.write(CONFIG, config(group=OTHER_GROUP, port=70000))
    running.systemctl("reload", UNIT)
    errors = wait_for("the error at priority err",
                      lambda: "70000" in (e := running.journal("-p", "err", "-o", "cat",
                                                               since=mark)) and e)
    assert f"{CONFIG}:2: port: 70000 is out of range 1..65535" in errors, errors
    assert running.out("systemctl", "is-active", UNIT) == "active"
    assert running.echo(OTHER_GROUP)["echoed"] == 3
    assert "reload failed" in running.show("StatusText")["StatusText"]


# ------------------------------------------------------------------------- 5. stop
def test_stop_leaves_the_group(running):
    assert running.joined(GROUP)
    mark = running.now()
    running.systemctl("stop", UNIT)
    assert not running.joined(GROUP)
    wait_for("the leave in the journal",
             lambda: f"left {GROUP} on mc0" in running.journal("-o", "cat", since=mark))
    props = running.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert props["ActiveState"] == "inactive"
    assert props["Result"] == "success", props
    assert props["ExecMainStatus"] == "0", props


# ------------------------------------------------------------------------- 6. crash, bad config
def test_kill_9_is_restarted(running):
    before = running.show("MainPID", "NRestarts")
    running.run("kill", "-9", before["MainPID"])
    after = wait_for("a new main pid", lambda: (
        (p := running.show("MainPID", "ActiveState", "NRestarts"))["ActiveState"] == "active"
        and p["MainPID"] not in ("0", before["MainPID"]) and p), timeout=20)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert running.echo(GROUP, sizes="1400")["echoed"] == 1


def test_bad_config_at_start_fails_with_78_and_no_restart_loop(running):
    running.systemctl("stop", UNIT)
    running.write(CONFIG, config(port=70000))
    mark = running.now()
    assert running.systemctl("start", UNIT, check=False).returncode != 0
    time.sleep(max(2.0, 3 * _seconds(running.show("RestartUSec")["RestartUSec"])))
    props = running.show("ActiveState", "Result", "NRestarts")
    assert props["ActiveState"] == "failed", props
    assert props["NRestarts"] == "0", f"restarted on a bad config: {props}"
    status = running.systemctl("status", UNIT, check=False).stdout
    assert "status=78" in status, status
    log = running.journal("-o", "cat", since=mark)
    starts = len(re.findall(r"^Starting ", log, re.M))
    assert starts == 1, f"{starts} starts: a restart loop\n{log}"
    errors = running.journal("-p", "err", "-o", "cat", since=mark)
    assert f"{CONFIG}:2: port: 70000 is out of range" in errors, log


# ------------------------------------------------------------------------- 7. watchdog, sandbox
def test_watchdog_pings_keep_it_active(running):
    watchdog = _seconds(running.show("WatchdogUSec")["WatchdogUSec"])
    assert watchdog > 0, "the unit sets no WatchdogSec"
    dropin = "/run/systemd/system/mcast-echo.service.d/watchdog.conf"
    # The same pings with a shorter wait: the daemon pings at WATCHDOG_USEC/2, whatever it is.
    # TimeoutAbortSec only shortens the kill of the frozen daemon below.
    running.run("mkdir", "-p", os.path.dirname(dropin))
    running.write(dropin, f"[Service]\nWatchdogSec={min(watchdog, 3):g}s\nTimeoutAbortSec=2s\n")
    running.systemctl("daemon-reload")
    running.systemctl("restart", UNIT)
    watchdog = _seconds(running.show("WatchdogUSec")["WatchdogUSec"])
    try:
        mark = running.now()
        before = running.show("MainPID", "NRestarts")
        time.sleep(2 * watchdog + 1)
        after = running.show("MainPID", "NRestarts", "ActiveState")
        assert after["ActiveState"] == "active"
        assert (after["MainPID"], after["NRestarts"]) == (before["MainPID"], before["NRestarts"])
        assert "Watchdog timeout" not in running.journal("-o", "cat", since=mark)
        # control: a daemon that stops pinging (frozen) is caught by the watchdog and restarted
        running.run("kill", "-STOP", before["MainPID"])
        wait_for("the watchdog to fire and systemd to restart the daemon", lambda: (
            (p := running.show("MainPID", "ActiveState"))["ActiveState"] == "active"
            and p["MainPID"] not in ("0", before["MainPID"])), timeout=2 * watchdog + 15)
        assert "Watchdog timeout" in running.journal("-o", "cat", since=mark)
    finally:
        running.run("rm", "-rf", os.path.dirname(dropin))
        running.systemctl("daemon-reload")
        running.systemctl("restart", UNIT)


def _seconds(timespan: str) -> float:
    """systemd's `show` timespans: '30s', '1min 30s', '500ms'."""
    units = {"min": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "h": 3600.0}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*(min|ms|us|s|h)", timespan):
        total += float(number) * units[unit]
    return total


def test_runs_as_a_dynamic_user_without_capabilities(running):
    pid = running.main_pid()
    status = dict(line.split(":", 1) for line in
                  running.out("cat", f"/proc/{pid}/status").splitlines() if ":" in line)
    uids = [int(u) for u in status["Uid"].split()]
    gids = [int(g) for g in status["Gid"].split()]
    assert all(u in DYNAMIC_UIDS for u in uids + gids), (uids, gids)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap].strip(), 16) == 0, f"{cap}: {status[cap].strip()}"
    assert status["NoNewPrivs"].strip() == "1"
    assert running.show("DynamicUser")["DynamicUser"] == "yes"


def test_security_score_on_the_running_system(running):
    report = running.run("systemd-analyze", "security", "--no-pager", UNIT, check=False).stdout
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", report)
    assert match, report
    score = float(match.group(1))
    print(f"systemd-analyze security {UNIT}: {score}")
    assert score <= SECURITY_LIMIT, report


# ------------------------------------------------------------------------- 8. the group check
PROBE, PROBE_TIMER = "mcast-echo-probe.service", "mcast-echo-probe.timer"
PROBE_DEFAULTS = "/etc/default/mcast-echo-probe"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # node_exporter's textfile directory
TEXTFILE = f"{TEXTFILE_DIR}/mcast-echo.prom"
PEER_RESPONDER = "mcast-echo-peer.service"  # a responder on another host: the peer netns


def probe_show(lab: Lab, *props: str) -> dict[str, str]:
    lines = lab.out("systemctl", "show", *[f"--property={p}" for p in props], PROBE)
    return dict(line.split("=", 1) for line in lines.splitlines())


def probe_samples(lab: Lab) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(lab.out("cat", TEXTFILE) + "\n"):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_the_group_check_writes_the_textfile_under_systemd(running):
    # installed, off: nothing probes until the admin enables the timer
    for unit in (PROBE_TIMER, PROBE):
        assert running.run("systemctl", "is-active", unit, check=False).stdout.strip() == \
            "inactive"
    assert running.run("systemctl", "is-enabled", PROBE_TIMER,
                       check=False).stdout.strip() == "disabled"
    assert PROBE_DEFAULTS in running.out("dpkg-query", "-W", "-f=${Conffiles}", "mcast-echo")
    files = running.out("dpkg", "-L", "mcast-echo").splitlines()
    for path in (f"/usr/lib/systemd/system/{PROBE}", f"/usr/lib/systemd/system/{PROBE_TIMER}",
                 "/usr/share/doc/mcast-echo/examples/mcast-echo.rules.yml",
                 "/usr/share/doc/mcast-echo/examples/mcast-echo-mesh.rules.yml",
                 "/usr/share/doc/mcast-echo/examples/mcast-echo-mesh.json"):
        assert path in files, path
    shipped_defaults = running.out("cat", PROBE_DEFAULTS)
    # the directory as Debian's prometheus-node-exporter makes it: root's, 0755, so the
    # dynamic user cannot write there and the unit's publish step must
    running.run("install", "-d", "-m", "0755", "-o", "root", "-g", "root", TEXTFILE_DIR)
    run = {"group": GROUP, "port": str(PORT)}
    try:
        # Alone, the host hears only its own daemon (over loopback): that proves nothing
        # about the network, so it never counts (exit 1, which SuccessExitStatus=1 makes a
        # clean exit of the unit: systemd shows status 0).
        running.systemctl("start", PROBE)  # a oneshot: returns when the run is over
        props = probe_show(running, "Result", "DynamicUser")
        assert props == {"Result": "success", "DynamicUser": "yes"}
        samples = probe_samples(running)
        assert samples["mcast_echo_probe_success"] == [(run, 0.0)]
        assert samples["mcast_echo_probe_responders"] == [(run, 0.0)]
        assert samples["mcast_echo_probe_local_responders"] == [(run, 1.0)]
        assert "mcast_echo_probe_up" not in samples
        # another host's responder (the peer netns) counts
        running.run("systemd-run", f"--unit={PEER_RESPONDER}", "--collect", "ip", "netns",
                    "exec", "peer", "/usr/bin/mcast-echo", "serve", "--interface", "mc0p")
        wait_for("the peer's responder", lambda: "ready:" in running.out(
            "journalctl", "--no-pager", "-o", "cat", "-u", PEER_RESPONDER))
        running.systemctl("start", PROBE)
        assert probe_show(running, "Result") == {"Result": "success"}
        samples = probe_samples(running)
        assert samples["mcast_echo_probe_success"] == [(run, 1.0)]
        assert samples["mcast_echo_probe_responders"] == [(run, 1.0)]
        assert samples["mcast_echo_probe_local_responders"] == [(run, 1.0)]
        assert samples["mcast_echo_probe_probes_sent"] == [(run, 5.0)]  # PROBE_COUNT=5
        [(labels, up)] = samples["mcast_echo_probe_up"]
        assert (labels["responder"], up) == (PEER_ADDR, 1.0)
        assert labels["name"] == running.out("hostname")  # ip netns exec keeps the UTS
        mode = running.out("stat", "-c", "%a %U", TEXTFILE)
        assert mode == "644 root", mode
        assert running.out("ls", "-A", TEXTFILE_DIR) == "mcast-echo.prom"  # no temporary left
        # fewer responders than expected: exit 1, which is no failure of the unit
        # (SuccessExitStatus=1: systemd then shows it as a clean exit); the textfile says it
        running.write(PROBE_DEFAULTS, shipped_defaults.replace("PROBE_EXPECT=1",
                                                               "PROBE_EXPECT=2") + "\n")
        mark = running.now()
        running.systemctl("start", PROBE)
        assert probe_show(running, "Result")["Result"] == "success"
        log = running.out("journalctl", "--no-pager", "-o", "cat", "-u", PROBE, f"--since={mark}")
        assert "5 probes transmitted, 1 responder (expected at least 2)" in log, log
        samples = probe_samples(running)
        assert samples["mcast_echo_probe_success"] == [(run, 0.0)]
        assert samples["mcast_echo_probe_expected_responders"] == [(run, 2.0)]
    finally:
        running.write(PROBE_DEFAULTS, shipped_defaults + "\n")
        running.systemctl("stop", PEER_RESPONDER, check=False)
    # the timer, enabled as the README says; left on for the removal step
    running.systemctl("enable", "--now", PROBE_TIMER)
    timer = running.out("systemctl", "show", "--property=ActiveState",
                        "--property=TimersCalendar", PROBE_TIMER)
    assert "ActiveState=active" in timer, timer
    assert "OnCalendar=*-*-* *:*:00" in timer, timer  # minutely


# ------------------------------------------------------------------------- upgrade and removal
def test_upgrade_keeps_the_admins_edit_and_restarts_a_running_service(running):
    edited = running.shipped_config + "\n# edited by the admin\n"
    running.write(CONFIG, edited)
    pid = running.main_pid()
    running.run("dpkg", "-i", running.deb)  # same version again: dpkg's upgrade path
    assert running.out("cat", CONFIG) == edited.strip()
    wait_for("a restarted daemon", lambda: running.main_pid() not in (0, pid))
    assert running.out("systemctl", "is-active", UNIT) == "active"
    assert running.run("systemctl", "is-enabled", UNIT, check=False).stdout.strip() == "disabled"


def test_remove_stops_it_and_purge_removes_the_config(running):
    running.run("dpkg", "--remove", "mcast-echo")
    assert running.run("systemctl", "is-active", UNIT, check=False).stdout.strip() != "active"
    # the group check's timer, left on by its test, is stopped too (debian/mcast-echo.prerm)
    assert running.run("systemctl", "is-active", PROBE_TIMER,
                       check=False).stdout.strip() != "active"
    assert not running.joined(GROUP)
    running.run("test", "-f", CONFIG)  # removal keeps conffiles
    running.run("dpkg", "--purge", "mcast-echo")
    assert running.run("test", "-e", CONFIG, check=False).returncode != 0
