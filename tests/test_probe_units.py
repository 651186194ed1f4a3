"""The scheduled group check (issue 11): its systemd units verify clean and score 1.5 or
better offline, and the example alerting rules pass `promtool check rules` and their own
`promtool test rules`, naming only series that ping's textfile and the daemon serve."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcast_echo.ping import textfile
from mcast_echo.ping.report import ResponderTable, RunCounts
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
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool is not installed (Debian: prometheus)")


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
    assert 'mv -fT "$$dir/.mcast-echo.prom.new" "$$dir/mcast-echo.prom"' in publish


def test_the_timer_runs_it_every_minute_spread_over_hosts():
    lines = unit_lines(TIMER)
    assert "OnCalendar=minutely" in lines
    assert "RandomizedDelaySec=15s" in lines and "FixedRandomDelay=yes" in lines
    assert "WantedBy=timers.target" in lines


@needs_promtool
def test_promtool_check_rules():
    done = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


@needs_promtool
def test_promtool_test_rules():
    done = subprocess.run(["promtool", "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_test():
    alerts = re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)
    tests = RULES_TEST.read_text()
    tested = re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests)
    assert set(alerts) == set(tested) and len(alerts) == 6, (alerts, tested)
    not_firing = re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", tests)
    assert set(not_firing) == set(alerts)


def test_the_rules_name_only_series_that_exist():
    """The probe series are those ping's textfile holds; the daemon's, its collector's."""
    names = set(re.findall(r"\b(mcast_echo_\w*[a-z])\b", RULES.read_text()))
    table = ResponderTable(9999)
    responder(table, "10.0.0.2", 1, (1.0,))
    written = textfile.render(textfile.ProbeRun(settings(), table, RunCounts(transmitted=1),
                                                1.0, 0.0)).decode()
    daemon = (ROOT / "src" / "mcast_echo" / "daemon" / "metrics.py").read_text()
    for name in names:
        if name.startswith("mcast_echo_probe_"):
            assert re.search(rf"^{name}[{{ ]", written, re.M), name
        else:
            assert f'"{name}"' in daemon, name
