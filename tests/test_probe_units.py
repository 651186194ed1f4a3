"""The scheduled group check (issue 11): its systemd units verify clean and score 1.5 or
better offline, and the example alerting rules pass `promtool check rules` and their own
`promtool test rules`, naming only series that ping's textfile and the daemon serve."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mcast_echo.ping import textfile
from mcast_echo.ping.tally import ResponderTable, RunCounts
from promtool import check_rules, needs_promtool, run_rule_tests
from test_probe_textfile import responder, settings

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "systemd" / "mcast-echo-probe.service"
TIMER = ROOT / "systemd" / "mcast-echo-probe.timer"
DEFAULTS = ROOT / "etc" / "default" / "mcast-echo-probe"
RULES = ROOT / "packaging" / "prometheus" / "mcast-echo.rules.yml"
RULES_TEST = ROOT / "packaging" / "prometheus" / "mcast-echo.rules.test.yml"
SECURITY_LIMIT = 1.5

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


def has_offline_security() -> bool:
    done = subprocess.run(["systemd-analyze", "security", "--help"], capture_output=True,
                          text=True, timeout=30)
    return "--offline" in done.stdout


@needs_systemd_analyze
def test_verify_prints_nothing(tmp_path):
    # verify checks that ExecStart= exists: point it at this checkout's console script.
    script = Path(sys.executable).parent / "mcast-echo"
    assert script.exists()
    for unit in (SERVICE, TIMER):
        (tmp_path / unit.name).write_text(
            unit.read_text().replace("/usr/bin/mcast-echo", str(script)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no",
                           str(tmp_path / SERVICE.name), str(tmp_path / TIMER.name)],
                          capture_output=True, text=True, timeout=60)
    # verify exits 0 on many problems (typos included): any output is a failure.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_systemd_analyze
def test_security_score_is_1_5_or_better():
    if not has_offline_security():
        pytest.skip("systemd-analyze security has no --offline (systemd < 250)")
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=15",
                           "--no-pager", str(SERVICE)], capture_output=True, text=True,
                          timeout=60)
    score = re.search(r"Overall exposure level for mcast-echo-probe.service: (\d+\.\d)",
                      done.stdout)
    assert score, done.stdout + done.stderr
    print(score.group(0))
    assert done.returncode == 0 and float(score.group(1)) <= SECURITY_LIMIT, done.stdout


def unit_lines(path: Path) -> list[str]:
    """The unit's settings, continuation lines joined."""
    return path.read_text().replace("\\\n", " ").splitlines()


def test_the_service_runs_ping_as_documented():
    lines = unit_lines(SERVICE)
    for line in ("Type=oneshot", "DynamicUser=yes", "CapabilityBoundingSet=",
                 "AmbientCapabilities=", "ProtectSystem=strict", "SuccessExitStatus=1",
                 "EnvironmentFile=-/etc/default/mcast-echo-probe",
                 "ReadWritePaths=-/var/lib/prometheus/node-exporter",
                 "RuntimeDirectory=mcast-echo-probe"):
        assert line in lines, line
    [start] = [line for line in lines if line.startswith("ExecStart=")]
    argv = start.split()
    assert argv[:3] == ["ExecStart=/usr/bin/mcast-echo", "ping", "-q"]
    for option, value in (("-c", "$PROBE_COUNT"), ("--expect", "$PROBE_EXPECT"),
                          ("--spread", "$PROBE_SPREAD"),
                          ("--prometheus-textfile", "/run/mcast-echo-probe/mcast-echo.prom")):
        assert argv[argv.index(option) + 1] == value, option
    # every variable the unit reads is documented (and set) in the shipped defaults
    used = set(re.findall(r"\$(PROBE_\w+)", start))
    documented = set(re.findall(r"^(PROBE_\w+)=", DEFAULTS.read_text(), re.M))
    assert used == documented == {"PROBE_TARGET", "PROBE_COUNT", "PROBE_EXPECT",
                                  "PROBE_SPREAD", "PROBE_OPTIONS"}
    # a run ends (-w) well within its minute and its timeout
    assert argv[argv.index("-w") + 1] == "40" and "TimeoutStartSec=50" in lines
    [publish] = [line for line in lines if line.startswith("ExecStopPost=")]
    assert publish.startswith("ExecStopPost=!")  # "!": only the user changes, the sandbox stays
    assert 'mv -fT -- "$$tmp" "$$dst"' in publish


def test_the_timer_runs_it_every_minute_spread_over_hosts():
    lines = unit_lines(TIMER)
    assert "OnCalendar=minutely" in lines
    assert "RandomizedDelaySec=15s" in lines and "FixedRandomDelay=yes" in lines
    assert "WantedBy=timers.target" in lines


@needs_promtool
def test_promtool_check_rules():
    done = check_rules(RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


@needs_promtool
def test_run_rule_tests():
    done = run_rule_tests(RULES_TEST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_test():
    alerts = re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)
    tests = RULES_TEST.read_text()
    tested = re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests)
    assert set(alerts) == set(tested) and len(alerts) == 7, (alerts, tested)
    not_firing = re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", tests)
    assert set(not_firing) == set(alerts)


def test_the_rules_name_only_series_that_exist():
    """The probe series are those ping's textfile holds; the daemon's, its collector's."""
    names = set(re.findall(r"\b(mcast_echo_\w*[a-z])\b", RULES.read_text()))
    table = ResponderTable(9999)
    responder(table, "10.0.0.2", 1, (1.0,))
    written = textfile.render(textfile.ProbeRun(settings(), table, RunCounts(transmitted=1),
                                                1.0, 0.0)).decode()
    daemon = (ROOT / "src" / "mcast_echo" / "daemon" / "collectors.py").read_text()
    for name in names:
        if name.startswith("mcast_echo_probe_"):
            assert re.search(rf"^{name}[{{ ]", written, re.M), name
        else:
            assert f'"{name}"' in daemon, name


RUN_FILE = "/run/mcast-echo-probe/mcast-echo.prom"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def publish_script(run_file: Path, textfile_dir: Path) -> str:
    """The unit's root publish step (ExecStopPost=!), as sh runs it, with its two paths
    pointed into a test directory."""
    [publish] = [line for line in unit_lines(SERVICE) if line.startswith("ExecStopPost=!")]
    argv = shlex.split(publish[len("ExecStopPost=!"):])
    assert argv[:2] == ["/bin/sh", "-ec"] and len(argv) == 3, argv
    script = argv[2].replace("$$", "$")  # systemd's escape for a literal $
    assert script.count(RUN_FILE) == 1 and script.count(TEXTFILE_DIR) == 1
    return script.replace(RUN_FILE, str(run_file)).replace(TEXTFILE_DIR, str(textfile_dir))


@pytest.fixture
def publish(tmp_path):
    """(run the publish step, the runtime directory's file, the published file)."""
    runtime, collector = tmp_path / "run", tmp_path / "node-exporter"
    runtime.mkdir()
    collector.mkdir()
    script = publish_script(runtime / "mcast-echo.prom", collector)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", "-ec", script], capture_output=True, text=True,
                              timeout=30)

    return run, runtime / "mcast-echo.prom", collector / "mcast-echo.prom"


def test_publish_replaces_a_regular_file_by_rename(publish):
    run, source, published = publish
    source.write_text("mcast_echo_probe_success 1\n")
    published.write_text("old\n")
    old_inode = published.stat().st_ino
    done = run()
    assert (done.returncode, done.stderr) == (0, "")
    assert published.read_text() == "mcast_echo_probe_success 1\n"
    assert published.stat().st_ino != old_inode
    assert stat.S_IMODE(published.stat().st_mode) == 0o644
    assert os.listdir(published.parent) == ["mcast-echo.prom"], "a temporary file was left"


def test_publish_without_a_run_file_does_nothing(publish):
    run, _source, published = publish
    done = run()
    assert (done.returncode, done.stderr) == (0, "")
    assert os.listdir(published.parent) == []


def test_publish_never_follows_a_symlink_the_run_planted(publish, tmp_path):
    """The dynamic user owns the runtime directory: a link there to a file only root can
    read must not make root copy that file into node_exporter's world-readable directory."""
    run, source, published = publish
    secret = tmp_path / "shadow"
    secret.write_text("root:secret\n")
    source.symlink_to(secret)
    done = run()
    assert done.returncode == 2
    assert f"{source} is not a regular file" in done.stderr and "remove it" in done.stderr
    assert os.listdir(published.parent) == []
    assert secret.read_text() == "root:secret\n"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "device"])
def test_publish_refuses_a_published_path_that_is_not_a_regular_file(publish, tmp_path, kind):
    run, source, published = publish
    source.write_text("mcast_echo_probe_success 1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep me\n")
    if kind == "symlink":
        published.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(published)
    elif kind == "directory":
        published.mkdir()
    else:
        try:
            os.mknod(published, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("mknod of a character device needs CAP_MKNOD")
    before = os.lstat(published)
    done = run()
    assert done.returncode == 2
    assert f"{published} is not a regular file" in done.stderr
    assert "left as it is" in done.stderr and "remove it" in done.stderr
    after = os.lstat(published)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert elsewhere.read_text() == "keep me\n"
    assert os.listdir(published.parent) == ["mcast-echo.prom"]
