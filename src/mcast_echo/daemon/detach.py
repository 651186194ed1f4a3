"""Running without systemd: ``serve --detach --pidfile PATH`` (python-daemon).

The order of a detached start, and why:

1. The pid file is locked (pidfile.py) before anything is bound: of two
   simultaneous starts the loser fails at once, with nothing joined.
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

import logging
import os
import select
import sys
import time
from typing import Callable, Mapping, Optional, TextIO

import daemon

from .logsetup import HUMAN_FORMAT, setup_logging
from .notify import Notifier
from .pidfile import PidFile, PidFileError, path_problem

READY_TIMEOUT = 15.0  # seconds the parent waits for the child's word after forking


def absolute(path: str) -> str:
    """*path* from the current directory (kept as written otherwise: no symlink resolution)."""
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def started_by_systemd(environ: Mapping[str, str] = os.environ) -> bool:
    return bool(environ.get("NOTIFY_SOCKET") or environ.get("INVOCATION_ID"))


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
            try:
                self.log_stream = open(self.log_path, "a", buffering=1)  # noqa: SIM115 (ours)
            except OSError as e:
                problem = path_problem("--log-file", self.log_path, e, "mcast-echo.log")
                raise PidFileError(problem) from None
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
