"""A pid file that never clobbers: ``serve --detach --pidfile PATH``.

Only a regular file of ours is used: one we create, or one a daemon of ours
left behind (empty, or one pid and a newline). A symbolic link, a device, a
FIFO, a directory, a file with other content, of another user or with other
hard links is refused with a line that says why, and left as it was. The lock
is an flock: it belongs to the open file, so it survives the forks of
detaching, and the kernel drops it when the daemon dies (a file left by
``kill -9`` never blocks a start). On stop the file is removed only if the
path still names the one we hold.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from typing import Optional

# A pid file holds one pid and a newline; anything else at the path is not ours.
PID_LINE = re.compile(rb"[1-9][0-9]{0,9}\n")
PID_LINE_MAX = 11
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISSOCK, "a socket"))


class PidFileError(Exception):
    """The pid file (or --detach's log file) cannot be used; the message names the path
    and says why."""


class AlreadyRunning(PidFileError):
    pass


def path_problem(option: str, path: str, error: OSError, example: str) -> str:
    """Why *option*'s file at *path* cannot be opened, with the fix: "--log-file PATH: ..."
    (*example* is a file name to offer when *path* is a directory)."""
    directory = os.path.dirname(path) or "."
    if isinstance(error, FileNotFoundError) and not os.path.isdir(directory):
        return (f"{option} {path}: the directory {directory} does not exist: create it "
                f"(mkdir -p {directory}) or name a file in a directory that does")
    if isinstance(error, IsADirectoryError) or os.path.isdir(path):
        return (f"{option} {path}: is a directory: name a file in it (e.g. "
                f"{os.path.join(path, example)})")
    return f"{option} {path}: {error.strerror or error}"


class PidFile:
    """A pid file that never clobbers: created by us, or a pid file of ours left behind.

    lock() in the foreground; the DaemonContext enters it (writes the daemon's
    pid) and exits it (removes the file, if the path still names the one we hold).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None
        self._identity: Optional[tuple[int, int]] = None  # (st_dev, st_ino) of what we hold
        self._created = False
        self._wrote_pid = False

    def lock(self) -> None:
        """Open and lock it, or raise PidFileError / AlreadyRunning saying why not."""
        if self._fd is not None:
            return
        for _ in range(5):  # the path changed under us (a stopping daemon removed it): again
            try:
                fd, created = self._open()
            except FileNotFoundError as e:
                if not os.path.isdir(os.path.dirname(self.path) or "."):
                    problem = path_problem("--pidfile", self.path, e, "mcast-echo.pid")
                    raise PidFileError(problem) from None
                continue  # removed between the look and the open
            except OSError as e:
                raise PidFileError(path_problem("--pidfile", self.path, e,
                                                "mcast-echo.pid")) from None
            try:
                st = self._lock(fd, created)
            except BaseException:
                os.close(fd)
                raise
            if _identity_at(self.path) == (st.st_dev, st.st_ino):
                self._fd, self._created = fd, created
                self._identity = (st.st_dev, st.st_ino)
                return
            os.close(fd)
        raise PidFileError(f"--pidfile {self.path} keeps being replaced; is another start "
                           "under way?")

    def _open(self) -> tuple[int, bool]:
        """(fd, created): a new file, or the existing one if it is a plain file of ours."""
        try:
            return os.open(self.path, _CREATE, 0o644), True
        except FileExistsError:
            pass
        # Look before opening: opening a device can act (a watchdog device arms itself).
        self._refuse_unless_ours(os.lstat(self.path))
        fd = os.open(self.path, _OPEN)
        try:
            self._refuse_unless_ours(os.fstat(fd))  # replaced between the look and the open
        except BaseException:
            os.close(fd)
            raise
        return fd, False

    def _refuse_unless_ours(self, st: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            self._refuse("is a symbolic link, which is never followed (name the file itself)")
        for is_kind, kind in _FILE_KINDS:
            if is_kind(st.st_mode):
                self._refuse(f"is {kind}, not a regular file")
        if st.st_uid != os.geteuid():
            self._refuse(f"belongs to uid {st.st_uid}, not to us (uid {os.geteuid()})")
        if st.st_nlink != 1:
            self._refuse(f"has {st.st_nlink} hard links; a pid file of ours has one")
        if st.st_size > PID_LINE_MAX:
            self._refuse(f"is not a pid file ({st.st_size} bytes; a pid file holds one pid)")

    def _refuse(self, reason: str) -> None:
        raise PidFileError(f"--pidfile {self.path} {reason}: refusing to use it")

    def _lock(self, fd: int, created: bool) -> os.stat_result:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(f"{self.path} is locked by {describe_holder(fd)}") from None
        except OSError as e:
            raise PidFileError(f"--pidfile {self.path}: cannot lock it: {e.strerror}") from None
        content = os.pread(fd, PID_LINE_MAX + 1, 0)
        if not created and content and not PID_LINE.fullmatch(content):
            self._refuse("is not a pid file (it holds something other than a pid and a "
                         "newline)")
        return os.fstat(fd)

    def write_pid(self) -> None:
        assert self._fd is not None, "lock() first"
        try:
            os.ftruncate(self._fd, 0)  # it held a stale pid of ours, or nothing
            self._wrote_pid = True
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            raise PidFileError(f"--pidfile {self.path}: cannot write the pid: "
                               f"{e.strerror}") from None

    def release(self) -> None:
        """Unlock; remove the file if it is ours (made or written by us) and still at the path."""
        if self._fd is None:
            return
        if (self._created or self._wrote_pid) and _identity_at(self.path) == self._identity:
            try:
                os.unlink(self.path)  # while still locked: no start can take the old inode
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = None

    def fileno(self) -> Optional[int]:
        return self._fd

    def __enter__(self) -> PidFile:
        self.lock()
        self.write_pid()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _identity_at(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def describe_holder(fd: int) -> str:
    """Who holds the lock, as far as can be verified (never the file's raw content)."""
    content = os.pread(fd, PID_LINE_MAX + 1, 0)
    if PID_LINE.fullmatch(content):
        pid = int(content)
        st = os.fstat(fd)
        if is_mcast_echo(pid) and holds_open(pid, (st.st_dev, st.st_ino)) is not False:
            return f"a running mcast-echo (pid {pid}): stop it first"
    return ("another process, whose pid is not in the file (an mcast-echo still starting?): "
            "try again, or stop it first")


def holds_open(pid: int, identity: tuple[int, int], proc_root: str = "/proc") -> Optional[bool]:
    """Whether *pid* has the file (st_dev, st_ino) open; None if we may not look."""
    try:
        names = os.listdir(f"{proc_root}/{pid}/fd")
    except PermissionError:
        return None
    except OSError:
        return False
    for name in names:
        try:
            st = os.stat(f"{proc_root}/{pid}/fd/{name}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == identity:
            return True
    return False


def is_mcast_echo(pid: int, proc_root: str = "/proc") -> bool:
    """Whether *pid* runs mcast-echo: the script, ``-m mcast_echo`` or its __main__.py."""
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(arg == b"mcast_echo" or os.path.basename(arg) == b"mcast-echo"
               or arg.endswith(b"/mcast_echo/__main__.py") for arg in argv[:4])
