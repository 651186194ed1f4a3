"""net/poller.py: the loop's epoll, with a real pipe.

The daemon registers its signals' wake-up pipe with the target None: a register that took
None for "already registered" left SIGTERM and SIGHUP to the next timeout (a detached stop
took 0.5 s instead of 0.03 s)."""

import os

from mcast_echo.net.poller import Poller


def test_a_none_target_is_polled_and_unregistered():
    poller = Poller()
    read_end, write_end = os.pipe()
    try:
        poller.register(read_end, None)
        poller.register(read_end, None)  # again: nothing to do
        os.write(write_end, b"x")
        assert poller.wait(5.0) == [None]  # at once: the pipe is readable
        poller.unregister(read_end)
        poller.unregister(read_end)  # never (now no longer) registered: nothing to do
        assert poller.wait(0.0) == []
    finally:
        poller.close()
        os.close(read_end)
        os.close(write_end)
