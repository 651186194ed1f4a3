"""The systemd unit: verify clean, and hardened to 1.5 or better."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "mcast-echo.service"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed")


def test_verify_prints_nothing(tmp_path):
    # verify checks that ExecStart= exists: point it at this checkout's console script.
    script = Path(sys.executable).parent / "mcast-echo"
    assert script.exists()
    unit = tmp_path / "mcast-echo.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/mcast-echo", str(script)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)
    # verify exits 0 on many problems (typos included): any output is a failure.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_security_score_is_1_5_or_better():
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=15",
                           "--no-pager", str(UNIT)], capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for mcast-echo.service: (\d+\.\d)", done.stdout)
    assert score, done.stdout + done.stderr
    assert done.returncode == 0 and float(score.group(1)) <= 1.5, score.group(0)


def test_unit_has_what_the_daemon_relies_on():
    text = UNIT.read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "RestartPreventExitStatus=78", "SyslogIdentifier=mcast-echo", "DynamicUser=yes",
                 "Wants=network-online.target", "After=network-online.target"):
        assert line in text.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert not re.search(r"^ProcSubset=pid", text, re.M)  # it would hide /proc/sys/net/core
