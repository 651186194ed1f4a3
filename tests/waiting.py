"""Waiting on a condition with a deadline: the one polling loop of the test suite.

A test that waits for something (a group joined, a file gone, an address local) asks
``wait_until`` rather than sleeping: a sleep is too long on a quiet machine and too
short on a busy one; a condition with a deadline is neither, and its failure says what
did not happen.
"""

from __future__ import annotations

import time
from typing import Callable


def wait_until(condition: Callable[[], object], timeout: float = 5.0,
               what: str = "the condition", step: float = 0.01) -> float:
    """Seconds until *condition()* held (polled every *step* s); AssertionError naming *what*
    after *timeout*."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(step)  # the poll interval of this wait, not a wait of its own
    return time.monotonic() - start
