"""Logging: <N> priority prefixes under journald, timestamps otherwise."""

import logging
import os
import subprocess
import sys


def run_logging(env_extra: dict) -> str:
    code = """
import logging, os, sys
from mcast_echo.daemon.logsetup import setup_logging
setup_logging("debug")
log = logging.getLogger("mcast_echo.x")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("failed")
"""
    # stderr to a file, so JOURNAL_STREAM can name its real device:inode
    r, w = os.pipe()
    st = os.fstat(w)
    env = {**os.environ, **{k: v.format(dev=st.st_dev, ino=st.st_ino)
                           for k, v in env_extra.items()}}
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=w, env=env)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    proc.wait(10)
    return out


def test_journal_stream_gets_priorities_on_every_line():
    out = run_logging({"JOURNAL_STREAM": "{dev}:{ino}"})
    lines = out.splitlines()
    assert lines[:4] == ["<7>d", "<6>i", "<4>w", "<3>e"]
    assert lines[4] == "<3>failed"
    assert len(lines) > 6 and all(line.startswith("<3>") for line in lines[4:])
    assert "<3>ValueError: boom" in lines


def test_elsewhere_a_human_format_with_timestamps():
    out = run_logging({"JOURNAL_STREAM": "1:2"})  # names some other file
    first = out.splitlines()[0]
    assert first.endswith("DEBUG   d") and first[:4].isdigit() and not first.startswith("<")


def test_level_names_map_to_syslog():
    from mcast_echo.daemon.logsetup import SYSLOG_PRIORITY
    assert SYSLOG_PRIORITY[logging.WARNING] == 4
