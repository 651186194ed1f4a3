"""A yardstick for the few tests that promise a wall-clock figure ("stops within half a
second"): how long this machine takes, right now, to start a Python that imports the CLI.

Two busy cores stretch the yardstick and the measured time alike, so a limit written as
``allowance(0.5, 2)`` -- the figure, or two Python start-ups measured under the same load,
whichever is longer -- holds the promise on a quiet machine and does not fail on a busy one.
Measure it while the load of the test is still on (before stopping a flood, say).
"""

from __future__ import annotations

import subprocess
import sys
import time


def python_start() -> float:
    """Seconds to start this Python, import mcast_echo's CLI and exit, now."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "import mcast_echo.cli"], check=True, timeout=120)
    return time.monotonic() - start


def allowance(seconds: float, start_ups: float) -> float:
    """*seconds*, or *start_ups* Python start-ups measured now, whichever is longer."""
    return max(seconds, start_ups * python_start())
