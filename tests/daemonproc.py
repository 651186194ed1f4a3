"""Run the real daemon as a subprocess (optionally inside a netlab Host) and watch its log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from netlab import Host


class DaemonProcess:
    def __init__(self, config_path: Path, host: Optional[Host] = None,
                 args: tuple[str, ...] = (), env: Optional[dict] = None) -> None:
        cmd = [sys.executable, "-m", "mcast_echo", "serve", "-c", str(config_path), *args]
        full_env = {**os.environ, **(env or {})}
        popen = host.popen if host is not None else subprocess.Popen
        self.proc = popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=full_env)
        self.pid = self.proc.pid
        self._terminated = False
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 10, start: int = 0) -> str:
        """The first log line (from index *start*) containing *text*; fails after *timeout*."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no log line with {text!r} within {timeout} s; "
                                         f"exit={self.proc.poll()}; log:\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.1))

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def send_signal(self, sig: int) -> None:
        self._terminated = self._terminated or sig == signal.SIGTERM
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 5) -> int:
        """SIGTERM (unless the test already sent it) and the exit status."""
        if self.proc.poll() is None and not self._terminated:
            self.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(2)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(2)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")
