"""Issue 12.4: the pid file never clobbers what its path names.

Only a regular file of ours (absent, empty, or one pid and a newline) is used; anything else is
refused in one line that names the path and says why, and is left exactly as it was. On stop
the file is removed only if the path still names the one the daemon holds.
"""

import os
import socket
import stat

import pytest

from detached import current_test, marked_pids, reap, running_pid, serve, stop
from netlab import local_igmp_groups

GROUP = "224.3.29.98"


@pytest.fixture(autouse=True)
def reap_detached():
    yield
    reap(current_test())


@pytest.fixture
def config(write_config):
    return write_config(f"interface: lo\ngroup: {GROUP}\n")


def snapshot(path):
    """What is at *path*, without following a link: kind, and content or target."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            return ("file", st.st_ino, f.read())
    return (stat.S_IFMT(st.st_mode), st.st_ino)


def symlink_to_precious(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me\n")
    os.symlink(tmp_path / "precious.txt", tmp_path / "mcast-echo.pid")
    return tmp_path / "mcast-echo.pid"


def dangling_symlink(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "mcast-echo.pid")
    return tmp_path / "mcast-echo.pid"


def config_file_typo(tmp_path):
    (tmp_path / "important.yaml").write_text("group: 239.1.2.3\n")
    return tmp_path / "important.yaml"


def short_text(tmp_path):
    (tmp_path / "notes").write_text("hello\n")  # short enough to pass as a pid by size
    return tmp_path / "notes"


def fifo(tmp_path):
    os.mkfifo(tmp_path / "mcast-echo.pid")
    return tmp_path / "mcast-echo.pid"


def directory(tmp_path):
    (tmp_path / "mcast-echo.pid").mkdir()
    return tmp_path / "mcast-echo.pid"


def hard_link(tmp_path):
    (tmp_path / "other.pid").write_text("123\n")
    os.link(tmp_path / "other.pid", tmp_path / "mcast-echo.pid")
    return tmp_path / "mcast-echo.pid"


def someone_elses(tmp_path):
    (tmp_path / "mcast-echo.pid").write_text("123\n")
    try:
        os.chown(tmp_path / "mcast-echo.pid", 65534, 65534)
    except PermissionError:
        pytest.skip("needs root to give a file to another user")
    return tmp_path / "mcast-echo.pid"


REFUSED = [
    pytest.param(symlink_to_precious, "is a symbolic link", id="symlink"),
    pytest.param(dangling_symlink, "is a symbolic link", id="dangling-symlink"),
    pytest.param(config_file_typo, "is not a pid file", id="typo-yaml"),
    pytest.param(short_text, "is not a pid file", id="short-text"),
    pytest.param(lambda tmp_path: "/dev/null", "is a character device", id="dev-null"),
    pytest.param(fifo, "is a FIFO", id="fifo"),
    pytest.param(directory, "is a directory", id="directory"),
    pytest.param(hard_link, "has 2 hard links", id="hard-link"),
    pytest.param(someone_elses, "belongs to uid 65534", id="other-user"),
]


@pytest.mark.parametrize(("make", "reason"), REFUSED)
def test_refuses_what_is_not_a_pid_file_of_ours(tmp_path, config, make, reason):
    path = str(make(tmp_path))
    before = {p: snapshot(p) for p in [path, *map(str, tmp_path.iterdir())]}
    done = serve(config, "--detach", "--pidfile", path)
    assert done.returncode == 69, done.stderr
    lines = [line for line in done.stderr.splitlines() if path in line and reason in line]
    assert len(lines) == 1 and "refusing to use it" in lines[0], done.stderr
    assert {p: snapshot(p) for p in before} == before  # nothing truncated, moved or removed
    assert sorted(map(str, tmp_path.iterdir())) == sorted(p for p in before if p != "/dev/null")
    assert not marked_pids(current_test())  # and nothing started
    assert ("lo", GROUP) not in local_igmp_groups()


@pytest.mark.parametrize("content", ["", "4000000\n"], ids=["empty", "stale-pid"])
def test_a_stale_pid_file_of_ours_is_reused_and_removed_on_stop(tmp_path, config, content):
    pidfile = tmp_path / "mcast-echo.pid"
    pidfile.write_text(content)
    done = serve(config, "--detach", "--pidfile", str(pidfile))
    assert done.returncode == 0, done.stderr
    stop(running_pid(pidfile))
    assert not pidfile.exists()


def test_stop_leaves_a_file_that_replaced_ours_alone(tmp_path, config):
    pidfile = tmp_path / "mcast-echo.pid"
    done = serve(config, "--detach", "--pidfile", str(pidfile))
    assert done.returncode == 0, done.stderr
    pid = running_pid(pidfile)
    pidfile.rename(tmp_path / "moved.pid")
    pidfile.write_text("someone else's\n")
    stop(pid)
    assert pidfile.read_text() == "someone else's\n"
    assert (tmp_path / "moved.pid").read_text() == f"{pid}\n"


def test_a_failed_start_leaves_a_stale_pid_file_as_it_was(tmp_path, write_config):
    config = write_config("interface: lo\ngroup: 224.3.29.99\nport: 9998\n")
    pidfile = tmp_path / "mcast-echo.pid"
    pidfile.write_text("4000000\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("224.3.29.99", 9998))
        done = serve(config, "--detach", "--pidfile", str(pidfile))
    assert done.returncode == 69, done.stderr
    assert pidfile.read_text() == "4000000\n"


@pytest.mark.parametrize(("option", "name", "says"), [
    ("--pidfile", "missing/mcast-echo.pid", "the directory {dir}/missing does not exist: create "
     "it (mkdir -p {dir}/missing) or name a file in a directory that does"),
    ("--log-file", "missing/mcast-echo.log", "the directory {dir}/missing does not exist: "
     "create it (mkdir -p {dir}/missing) or name a file in a directory that does"),
    ("--log-file", "", "is a directory: name a file in it (e.g. {dir}/mcast-echo.log)"),
])
def test_a_pid_or_log_file_that_cannot_be_made_is_named_with_the_fix(tmp_path, config, option,
                                                                       name, says):
    """#20.4: a pid file in a missing directory said it "keeps being replaced"; --log-file
    errors said only "No such file or directory" or "Is a directory"."""
    path = str(tmp_path / name) if name else str(tmp_path)
    done = serve(config, "--detach", option, path)
    assert done.returncode == 69, done.stderr
    assert f"ERROR   {option} {path}: {says.format(dir=tmp_path)}" in done.stderr, done.stderr
    assert not marked_pids(current_test())
