"""Without systemd: --detach with a pid file.

The exit status is the detached daemon's word (0 only once it serves), the pid
file never clobbers anything, paths are taken from where the command ran, and
a detached daemon stops as fast as a foreground one.
"""

import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from detached import (
    INTERPRETERS,
    current_test,
    detach_args,
    marked_pids,
    reap,
    running_pid,
    serve,
    serve_command,
    stop,
    wait_exited,
)
from netlab import local_igmp_groups
from waiting import wait_until
from yardstick import allowance


@pytest.fixture(autouse=True)
def reap_detached():
    yield
    reap(current_test())

# ---------------------------------------------------------------- start and stop

@pytest.mark.parametrize("python", INTERPRETERS)
def test_detach_pidfile_and_stale_pidfile(tmp_path, write_config, python):
    config = write_config("interface: lo\ngroup: 224.3.29.90\n")
    pidfile, logfile, args = detach_args(tmp_path)
    done = serve(config, *args, python=python)
    assert done.returncode == 0, done.stderr
    # Exit 0 means serving: the pid is written and the group joined, no waiting needed.
    pid = running_pid(pidfile)
    assert ("lo", "224.3.29.90") in local_igmp_groups()
    assert "ready:" in logfile.read_text()
    with open(f"/proc/{pid}/status") as f:
        assert "Umask:\t0022" in f.read()
    # A second start is refused while the first runs, and names it.
    second = serve(config, *args, python=python)
    assert second.returncode == 69, second.stderr
    assert f"is locked by a running mcast-echo (pid {pid}): stop it first" in second.stderr
    # kill -9 leaves the pid file behind; the next start must not mind.
    os.kill(pid, signal.SIGKILL)
    wait_exited(pid)
    assert pidfile.read_text() == f"{pid}\n"
    done = serve(config, *args, python=python)
    assert done.returncode == 0, done.stderr
    new_pid = running_pid(pidfile)
    assert new_pid != pid
    stop(new_pid)
    assert not pidfile.exists()
    log = logfile.read_text()
    assert "detached" in log and "left 224.3.29.90 on lo" in log


def test_detach_is_refused_under_systemd(tmp_path, write_config):
    config = write_config("interface: lo\n")
    done = serve(config, "--detach", env_extra={"INVOCATION_ID": "0123"})
    assert done.returncode == 64
    assert "--detach refused: started by systemd" in done.stderr


@pytest.mark.parametrize("python", INTERPRETERS)
def test_detached_daemon_stops_within_a_fraction_of_a_second(tmp_path, write_config, python):
    """Issue 13.9: measured to the daemon's exit, not to init reaping the zombie it leaves.

    In a container whose init reaps orphans lazily (this sandbox's: ~1.8 s), `kill -0`
    goes on succeeding after the daemon exited; the pid file is gone when it has stopped.
    """
    config = write_config("interface: lo\ngroup: 224.3.29.96\n")
    pidfile, _, args = detach_args(tmp_path)
    done = serve(config, *args, python=python)
    assert done.returncode == 0, done.stderr
    pid = running_pid(pidfile)
    start = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    took = wait_exited(pid)
    wait_until(lambda: not pidfile.exists(), timeout=1, what="pid file removal")
    pidfile_gone = time.monotonic() - start
    print(f"detached stop: exited after {took:.3f} s, pid file gone after {pidfile_gone:.3f} s")
    assert max(took, pidfile_gone) < allowance(0.5, 2), (took, pidfile_gone)
    assert ("lo", "224.3.29.96") not in local_igmp_groups()


# ---------------------------------------------------------------- the exit status is the truth

@pytest.mark.parametrize("python", INTERPRETERS)
def test_two_simultaneous_starts_exactly_one_succeeds(tmp_path, write_config, python):
    config = write_config("interface: lo\ngroup: 224.3.29.91\n")
    pidfile, _, args = detach_args(tmp_path)
    for _ in range(4):
        cmd, env = serve_command(config, *args, python=python)
        starts = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = []
        for start in starts:
            _, stderr = start.communicate(timeout=30)
            results.append((start.returncode, stderr))
        assert sorted(code for code, _ in results) == [0, 69], results
        loser = next(stderr for code, stderr in results if code == 69)
        assert "is locked by" in loser
        pid = running_pid(pidfile)
        if "a running mcast-echo" in loser:  # a pid is named only when it is the winner's
            assert f"(pid {pid})" in loser
        # the loser never joined: one membership, one daemon
        assert local_igmp_groups().count(("lo", "224.3.29.91")) == 1
        stop(pid)
        assert not pidfile.exists()


def test_a_start_that_fails_after_detaching_exits_69_with_the_reason(tmp_path, write_config):
    """The detached child fails (it cannot write the pid): the parent says so, and why."""
    import resource

    config = write_config("interface: lo\ngroup: 224.3.29.92\n")
    pidfile = tmp_path / "mcast-echo.pid"

    def no_file_growth():  # Python ignores SIGXFSZ: the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    done = serve(config, "--detach", "--pidfile", str(pidfile), preexec_fn=no_file_growth)
    assert done.returncode == 69, done.stderr
    assert f"--pidfile {pidfile}: cannot write the pid: File too large" in done.stderr
    wait_until(lambda: not marked_pids(current_test()), what="daemon exit")
    assert not pidfile.exists()  # we created it: we remove it
    assert ("lo", "224.3.29.92") not in local_igmp_groups()


def test_a_bind_failure_is_on_the_terminal_too_with_a_log_file(tmp_path, write_config):
    config = write_config("interface: lo\ngroup: 224.3.29.93\nport: 9993\n")
    pidfile, logfile, args = detach_args(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("224.3.29.93", 9993))
        done = serve(config, *args)
    assert done.returncode == 69, done.stderr
    assert "224.3.29.93" in done.stderr and "9993" in done.stderr
    assert not pidfile.exists()


def test_lock_message_names_only_a_verified_holder(tmp_path, write_config):
    """Not the file's content, not a pid that is not mcast-echo or does not hold the file."""
    config = write_config("interface: lo\ngroup: 224.3.29.94\n")
    pidfile, _, args = detach_args(tmp_path)
    other_pidfile = tmp_path / "other.pid"
    done = serve(write_config("interface: lo\ngroup: 224.3.29.89\n"), "--detach",
                 "--pidfile", str(other_pidfile))
    assert done.returncode == 0, done.stderr
    other_daemon = running_pid(other_pidfile)  # a running mcast-echo, holding another file
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        for content in ("hello\n", f"{sleeper.pid}\n", f"{other_daemon}\n"):
            pidfile.write_text(content)
            with open(pidfile) as held:
                fcntl.flock(held, fcntl.LOCK_EX)
                done = serve(config, *args)
            assert done.returncode == 69
            assert f"{pidfile} is locked by another process" in done.stderr
            assert "hello" not in done.stderr and f"pid {content.strip()}" not in done.stderr
            assert pidfile.read_text() == content
    finally:
        sleeper.kill()
        sleeper.wait()
        stop(other_daemon)


def test_detach_is_refused_as_pid_1(tmp_path, write_config):
    """As a container's init there is nothing to detach from: say so (issue 13.16)."""
    config = write_config("interface: lo\n")
    cmd, env = serve_command(config, "--detach")
    done = subprocess.run(["unshare", "--pid", "--fork", *cmd], env=env, capture_output=True,
                          text=True, timeout=30)
    if "unshare:" in done.stderr:
        pytest.skip(f"no pid namespace here: {done.stderr.strip()}")
    assert done.returncode == 64, done.stderr
    assert "--detach refused: running as PID 1" in done.stderr


# ---------------------------------------------------------------- paths

def test_relative_paths_still_work_after_detaching(tmp_path, write_config):
    """Issue 13.1: the daemon runs in /, so -c, --pidfile and --log-file are resolved first."""
    write_config("interface: lo\ngroup: 224.3.29.95\n")
    pidname = f"{tmp_path.name}.pid"  # unique, should it land in / as it once did
    try:
        done = serve("mcast-echo.yaml", "--detach", "--pidfile", pidname, "--log-file", "d.log",
                     cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        pid = running_pid(tmp_path / pidname)
        write_config("interface: lo\ngroup: 224.3.29.97\n")
        os.kill(pid, signal.SIGHUP)
        log = tmp_path / "d.log"
        wait_until(lambda: "reload" in log.read_text(), what="reload in the log")
        wait_until(lambda: ("lo", "224.3.29.97") in local_igmp_groups(), what="the new group")
        assert "reload failed" not in log.read_text()
        stop(pid)
        assert not (tmp_path / pidname).exists()
    finally:
        stray = Path("/") / pidname
        assert not stray.exists(), stray.unlink()


def test_a_process_that_exits_while_its_stat_is_read_counts_as_exited(monkeypatch):
    """#20.12: reading /proc/PID/stat of a process that has just gone raises ESRCH
    (ProcessLookupError), not only FileNotFoundError; the helper raced on it."""
    import detached

    def vanishing(path, *args, **kw):
        raise ProcessLookupError(errno.ESRCH, "No such process")

    monkeypatch.setattr(detached, "open", vanishing, raising=False)
    assert detached.exited(4_000_000)
