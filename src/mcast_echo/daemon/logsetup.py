"""Logging to stderr: journald's priority prefixes under systemd, timestamps otherwise.

When stderr is the journal stream (JOURNAL_STREAM names its device:inode),
every line — each traceback line too — starts with ``<N>``, the syslog
priority, and carries no timestamp (journald adds its own).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TextIO

SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def stderr_is_journal(stream: TextIO = sys.stderr) -> bool:
    wanted = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return wanted == f"{st.st_dev}:{st.st_ino}"


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])


HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def setup_logging(level: str = "info", stream: Optional[TextIO] = None) -> logging.Handler:
    """Route the package's logs to *stream* (stderr); returns the handler."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if stderr_is_journal(stream):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
    root = logging.getLogger("mcast_echo")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.propagate = False
    set_level(level)
    return handler


def set_level(level: str) -> None:
    logging.getLogger("mcast_echo").setLevel(level.upper())
