"""systemd glue: the few verbs the daemon tells its service manager.

Wraps the sdnotify package so that its known defects cannot bite:
- without NOTIFY_SOCKET every verb is a no-op (sdnotify would half-construct);
- sdnotify encodes with latin-1, so a non-latin-1 STATUS raised inside it and
  was swallowed; we hand it text whose latin-1 encoding *is* our UTF-8 bytes;
- it swallows every error; we run it with debug=True and log failures ourselves,
  once, instead of silently losing READY=1;
- its socket blocks: a service manager slow to read (its queue holds
  net.unix.max_dgram_qlen datagrams) would stall the echo loop on a STATUS or
  WATCHDOG=1. STATUS and WATCHDOG=1 are sent without waiting (a newer one follows
  soon: one that finds the queue full is dropped, and that is said once); READY=1,
  RELOADING=1 and STOPPING=1 wait at most STATE_WAIT seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping, Optional

import sdnotify

log = logging.getLogger(__name__)

STATE_WAIT = 1.0  # seconds READY/RELOADING/STOPPING may wait for room in systemd's queue


def _utf8_through_latin1(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._notifier: Optional[sdnotify.SystemdNotifier] = None
        self._failed = False
        self._dropped = 0  # STATUS / WATCHDOG=1 messages that found systemd's queue full
        if environ.get("NOTIFY_SOCKET"):
            try:
                self._notifier = sdnotify.SystemdNotifier(debug=True)
            except OSError as e:
                log.error("cannot reach systemd's notify socket %s: %s",
                          environ["NOTIFY_SOCKET"], e)
        self.watchdog_interval = _watchdog_interval(environ)

    def _send(self, *fields: str, wait: float = 0.0) -> None:
        """Send *fields* as one message, waiting up to *wait* s for room in the queue."""
        if self._notifier is None:
            return
        try:
            self._notifier.socket.settimeout(wait or 0.0)  # 0: non-blocking
            self._notifier.notify(_utf8_through_latin1("\n".join(fields)))
        except (BlockingIOError, socket.timeout) as e:  # socket.timeout: TimeoutError on 3.10+
            self._dropped += 1
            if self._dropped == 1:  # once: the queue stays full while systemd is busy
                log.warning("systemd's notify socket is full: %s not sent (%s); the echo "
                            "loop does not wait for it", fields[0].split("=", 1)[0], e)
        except OSError as e:
            if not self._failed:  # once: this repeats every few seconds otherwise
                log.error("sd_notify failed: %s (systemd will not see state changes)", e)
                self._failed = True

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}", wait=STATE_WAIT)

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def reloading(self) -> None:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1; older ones ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading",
                   wait=STATE_WAIT)

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping: leaving groups", wait=STATE_WAIT)

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")


def _watchdog_interval(environ: Mapping[str, str]) -> Optional[float]:
    """Seconds between WATCHDOG=1 (half of WatchdogSec), or None when not asked for."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2 / 1e6
