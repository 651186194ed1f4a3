"""Running without systemd: ``serve --detach --pidfile PATH`` (python-daemon).

The order of a detached start, and why:

1. The pid file is locked (``flock``) before anything is bound: of two
   simultaneous starts the loser fails at once, with nothing joined. An flock
   belongs to the open file, so it survives the forks below; the kernel drops
   it when the daemon dies, so a file left by ``kill -9`` never blocks a start.
2. The daemon binds and joins in the foreground (its errors on the terminal).
3. We fork once ourselves and the original process waits on a pipe: python-
   daemon's own forks end their parents with ``os._exit(0)``, which would tell
   the shell "started" before the daemon serves. The child goes through
   DaemonContext (double fork, setsid, chdir /), writes its pid, and at its
   first READY says "ready" down the pipe; its warnings and errors until then
   go down the pipe too, and the parent prints them. EOF without "ready" is a
   failed start. Works with python-daemon 2.3.2 (Debian 12) and 3.x: the pid
   file is an object with ``__enter__``/``__exit__``, the pipe a preserved fd.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import select
import stat
import sys
import time
from typing import Callable, Mapping, Optional, TextIO

import daemon

from .logsetup import HUMAN_FORMAT, setup_logging
from .notify import Notifier

READY_TIMEOUT = 15.0  # seconds the parent waits for the child's word after forking

# A pid file holds one pid and a newline; anything else at the path is not ours.
PID_LINE = re.compile(rb"[1-9][0-9]{0,9}\n")
PID_LINE_MAX = 11
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
_FILE_KINDS = ((stat.S_ISLNK, "a symbolic link (it is not followed: name the file itself)"),
               (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISSOCK, "a socket"))


class PidFileError(Exception):
    """The pid file cannot be used; the message names the path and says why."""


class AlreadyRunning(PidFileError):
    pass


def absolute(path: str) -> str:
    """*path* from the current directory (kept as written otherwise: no symlink resolution)."""
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def started_by_systemd(environ: Mapping[str, str] = os.environ) -> bool:
    return bool(environ.get("NOTIFY_SOCKET") or environ.get("INVOCATION_ID"))


# ---------------------------------------------------------------- the pid file

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
            except FileNotFoundError:
                continue
            except OSError as e:
                raise PidFileError(f"--pidfile {self.path}: {e.strerror}") from None
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


# ---------------------------------------------------------------- the child's word

class StartupPipe:
    """Child to parent: "log <line>" for each warning or error line, then "ready"."""

    def __init__(self) -> None:
        self._read_end, self._write_end = os.pipe2(os.O_CLOEXEC)

    @property
    def write_end(self) -> Optional[int]:
        return self._write_end

    # The child's side.
    def become_child(self) -> None:
        os.close(self._read_end)

    def send_log(self, text: str) -> None:
        self._send("".join(f"log {line}\n" for line in text.splitlines()))

    def send_ready(self) -> None:
        self._send("ready\n")
        self.close()

    def _send(self, text: str) -> None:
        if self._write_end is None:
            return
        try:
            os.write(self._write_end, text.encode(errors="replace"))
        except OSError:  # the parent is gone (killed while waiting): the log file has it
            pass

    def close(self) -> None:
        if self._write_end is not None:
            os.close(self._write_end)
            self._write_end = None

    # The parent's side.
    def receive(self, timeout: float) -> tuple[bool, list[str]]:
        """(ready, log lines) once the child closes its end or *timeout* runs out."""
        self.close()
        data = b""
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([self._read_end], [], [], left)[0]:
                    break
                chunk = os.read(self._read_end, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(self._read_end)
        lines = data.decode(errors="replace").splitlines()
        return "ready" in lines, [line[4:] for line in lines if line.startswith("log ")]


class PipeHandler(logging.Handler):
    def __init__(self, pipe: StartupPipe) -> None:
        super().__init__(logging.WARNING)
        self.pipe = pipe
        self.setFormatter(logging.Formatter(HUMAN_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.pipe.send_log(self.format(record))


class DetachedNotifier(Notifier):
    """Under --detach there is no systemd to tell: READY goes to the waiting parent."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        super().__init__()
        self._on_ready = on_ready

    def ready(self, status: str) -> None:
        super().ready(status)
        self._on_ready()


# ---------------------------------------------------------------- the whole start

class Detacher:
    """What ``serve --detach`` does around the daemon: lock, fork, detach, report."""

    def __init__(self, pidfile_path: Optional[str], log_path: Optional[str]) -> None:
        self.pidfile = PidFile(pidfile_path) if pidfile_path else None
        self.log_path = log_path
        self.log_stream: Optional[TextIO] = None
        self.pipe = StartupPipe()
        self.notifier = DetachedNotifier(self._ready)
        self._pipe_handler = PipeHandler(self.pipe)

    def prepare(self, level: str) -> None:
        """In the foreground: lock the pid file and log to the file (problems on stderr too)."""
        if self.pidfile:
            self.pidfile.lock()
        if self.log_path:
            self.log_stream = open(self.log_path, "a", buffering=1)  # noqa: SIM115 (lives with us)
            setup_logging(level, self.log_stream)
            terminal = logging.StreamHandler(sys.stderr)
            terminal.setLevel(logging.WARNING)
            terminal.setFormatter(logging.Formatter(HUMAN_FORMAT))
            logging.getLogger("mcast_echo").addHandler(terminal)

    def fork(self) -> Optional[bool]:
        """None in the child (go on detaching); in the original process, whether it served."""
        child = os.fork()
        if child == 0:
            self.pipe.become_child()
            root = logging.getLogger("mcast_echo")
            for handler in list(root.handlers):  # from now on only the parent writes there
                if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                    root.removeHandler(handler)
            if not root.handlers:  # no --log-file: the log is discarded once detached
                root.addHandler(logging.NullHandler())
            root.addHandler(self._pipe_handler)
            return None
        ready, lines = self.pipe.receive(READY_TIMEOUT)
        _reap(child)
        for line in lines:
            print(line, file=sys.stderr)
        if not ready and not lines:
            where = f"see {self.log_path}" if self.log_path else "use --log-file to see why"
            print(f"error: the detached daemon stopped before it was ready ({where})",
                  file=sys.stderr)
        return ready

    def context(self, keep_fds: list[int]) -> daemon.DaemonContext:
        """Detach (double fork, setsid, chdir /, umask 022) keeping our sockets and files."""
        kept = keep_fds + [fd for fd in (self.pipe.write_end,
                                         self.pidfile.fileno() if self.pidfile else None,
                                         self.log_stream.fileno() if self.log_stream else None)
                           if fd is not None]
        return daemon.DaemonContext(
            umask=0o022,
            working_directory="/",
            pidfile=self.pidfile,
            files_preserve=kept,
            # Always: python-daemon's "started by init?" guess would look at us, its parent.
            detach_process=True,
            signal_map={},  # the daemon installs its own handlers
        )

    def _ready(self) -> None:
        if self.pipe.write_end is not None:
            self.pipe.send_ready()
            logging.getLogger("mcast_echo").removeHandler(self._pipe_handler)

    def abandon(self) -> None:
        """A failed start: release (and remove, if ours) the pid file."""
        if self.pidfile:
            self.pidfile.release()


def _reap(child: int, timeout: float = 2.0) -> None:
    """Collect our first child, which exits at python-daemon's first fork (or on failure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitpid(child, os.WNOHANG)[0]:
            return
        time.sleep(0.01)
