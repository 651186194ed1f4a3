"""Helpers for the --detach tests: start `serve --detach`, find and reap what it left."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from waiting import wait_until

SRC = str(Path(__file__).resolve().parent.parent / "src")
DEBIAN_PYTHON = "/usr/bin/python3"
MARK = "MCAST_ECHO_TEST_MARK"  # in each started daemon's environment: who to reap


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


def serve_command(config, *args, env_extra=None, python=sys.executable):
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "INVOCATION_ID")}
    env["PYTHONPATH"] = SRC  # the source under test, whichever interpreter runs it
    env[MARK] = current_test()
    env.update(env_extra or {})
    return [python, "-m", "mcast_echo", "serve", "-c", str(config), *args], env


def serve(config, *args, env_extra=None, python=sys.executable, **popen_args):
    cmd, env = serve_command(config, *args, env_extra=env_extra, python=python)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env,
                          **popen_args)


def current_test() -> str:
    """This test's id (PYTEST_CURRENT_TEST without its " (setup)" / " (call)" phase)."""
    return os.environ.get("PYTEST_CURRENT_TEST", "detach").rsplit(" ", 1)[0]


def marked_pids(mark: str) -> list[int]:
    """Pids whose environment carries *mark* (this test's daemons)."""
    wanted = f"{MARK}={mark}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def reap(mark: str) -> None:
    """A detached daemon is no child of ours: end the ones a test started, whatever happened."""
    for pid in marked_pids(mark):
        if not exited(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it exited since
                pass


def exited(pid: int) -> bool:
    """Gone, or a zombie: a detached daemon's parent is init, which reaps when it likes."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # reading a stat that just went: ESRCH
        return True


def wait_exited(pid, timeout=5.0) -> float:
    """Seconds until *pid* has exited; fails after *timeout*."""
    return wait_until(lambda: exited(pid), timeout, f"exit of pid {pid}", step=0.002)


def running_pid(pidfile: Path) -> int:
    """The pid in the file, which must be a live daemon (no waiting: exit 0 promised it)."""
    text = pidfile.read_text()
    assert text.endswith("\n") and text[:-1].isdigit(), repr(text)
    pid = int(text)
    assert pid != os.getpid() and not exited(pid)
    return pid


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    wait_exited(pid)


def detach_args(tmp_path):
    pidfile, logfile = tmp_path / "mcast-echo.pid", tmp_path / "mcast-echo.log"
    return pidfile, logfile, ("--detach", "--pidfile", str(pidfile), "--log-file", str(logfile))
