"""Running without systemd: ``serve --detach --pidfile PATH`` (python-daemon).

The pid file is locked with fcntl for the daemon's whole life, so a file left
behind by ``kill -9`` (lock released by the kernel) never blocks the next
start, while a live daemon's file does. Works with python-daemon 2.3.2
(Debian 12) and 3.x: DaemonContext only needs an object with ``__enter__`` /
``__exit__`` as its pidfile.
"""

from __future__ import annotations

import fcntl
import os
from typing import Mapping, Optional

import daemon


class AlreadyRunning(Exception):
    pass


class PidFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None

    def check(self) -> None:
        """Raise AlreadyRunning if a live daemon holds the file (before we detach)."""
        self.acquire(write_pid=False)
        self.release(remove=False)

    def acquire(self, write_pid: bool = True) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"{self.path} is locked by a running mcast-echo "
                                 f"(pid {holder}): stop it first") from None
        if write_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self, remove: bool = True) -> None:
        if self._fd is None:
            return
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def started_by_systemd(environ: Mapping[str, str] = os.environ) -> bool:
    return bool(environ.get("NOTIFY_SOCKET") or environ.get("INVOCATION_ID"))


def daemon_context(pidfile: Optional[PidFile], keep_fds: list) -> daemon.DaemonContext:
    """Detach (double fork, setsid, chdir /, umask 022) keeping our sockets and log file."""
    return daemon.DaemonContext(
        umask=0o022,
        working_directory="/",
        pidfile=pidfile,
        files_preserve=keep_fds,
        signal_map={},  # the daemon installs its own handlers after detaching
    )
