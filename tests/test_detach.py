"""Without systemd: --detach with a pid file, and a stale pid file does not block."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import local_igmp_groups

SRC = str(Path(__file__).resolve().parent.parent / "src")
DEBIAN_PYTHON = "/usr/bin/python3"


def debian_has_our_dependencies() -> bool:
    """Debian 12's python3-daemon 2.3.2, python3-sdnotify 0.3.1 and python3-yaml."""
    if not os.path.exists(DEBIAN_PYTHON):
        return False
    return subprocess.run([DEBIAN_PYTHON, "-c", "import daemon, sdnotify, yaml"],
                          capture_output=True).returncode == 0


INTERPRETERS = [
    pytest.param(sys.executable, id="venv"),
    pytest.param(DEBIAN_PYTHON, id="debian-python3-daemon", marks=pytest.mark.skipif(
        not debian_has_our_dependencies(),
        reason="Debian's python3-daemon/python3-sdnotify/python3-yaml are not installed")),
]


def serve(config, *args, env_extra=None, python=sys.executable):
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "INVOCATION_ID")}
    env.update(env_extra or {})
    if python != sys.executable:
        env["PYTHONPATH"] = SRC  # Debian's interpreter with Debian's libraries, our source
    return subprocess.run([python, "-m", "mcast_echo", "serve", "-c", str(config),
                           *args], capture_output=True, text=True, timeout=30, env=env)


def wait_for_pid(pidfile, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = pidfile.read_text().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError("no pid file")


def wait_gone(pid, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")


def started_with(marker: str) -> list[int]:
    """Pids whose command line names *marker* (this test's own unique pid-file path)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


@pytest.fixture
def reap_detached(tmp_path):
    """A detached daemon is no child of ours: if a test fails, end the ones it started."""
    yield
    for pid in started_with(str(tmp_path / "mcast-echo.pid")):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("python", INTERPRETERS)
def test_detach_pidfile_and_stale_pidfile(tmp_path, write_config, python, reap_detached):
    config = write_config("interface: lo\ngroup: 224.3.29.90\n")
    pidfile, logfile = tmp_path / "mcast-echo.pid", tmp_path / "mcast-echo.log"
    args = ("--detach", "--pidfile", str(pidfile), "--log-file", str(logfile))
    done = serve(config, *args, python=python)
    assert done.returncode == 0, done.stderr
    pid = wait_for_pid(pidfile)
    try:
        assert pid != os.getpid()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        assert "Umask:\t0022" in status
        deadline = time.monotonic() + 5
        while ("lo", "224.3.29.90") not in local_igmp_groups() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ("lo", "224.3.29.90") in local_igmp_groups()
        # A second start is refused while the first runs.
        second = serve(config, *args, python=python)
        assert second.returncode == 69 and "is locked by a running mcast-echo" in second.stderr
        # kill -9 leaves the pid file behind; the next start must not mind.
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
        assert pidfile.exists()
    finally:
        if pid in started_with(str(pidfile)):
            os.kill(pid, signal.SIGKILL)
    done = serve(config, *args, python=python)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 5
    while wait_for_pid(pidfile) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    new_pid = wait_for_pid(pidfile)
    assert new_pid != pid
    os.kill(new_pid, signal.SIGTERM)
    wait_gone(new_pid)
    assert not pidfile.exists()
    log = logfile.read_text()
    assert "detached" in log and "left 224.3.29.90 on lo" in log


def test_detach_is_refused_under_systemd(tmp_path, write_config):
    config = write_config("interface: lo\n")
    done = serve(config, "--detach", env_extra={"INVOCATION_ID": "0123"})
    assert done.returncode == 64
    assert "--detach refused: started by systemd" in done.stderr
