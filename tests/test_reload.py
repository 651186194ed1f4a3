"""Reload in-process, through the daemon's own loop (SIGHUP, the reload thread): even an
unexpected error while reading the file keeps the old config."""

import os
import signal
import sys
import threading

from detached import wait_until
from mcast_echo.config import load_config
from mcast_echo.daemon import reloader
from mcast_echo.daemon import service as daemon_module
from mcast_echo.daemon.notify import Notifier


class InProcessDaemon:
    """A Daemon in this (private-namespace) process, with pytest's signal handlers kept.

    serve_while() runs its real loop (Daemon.run) while a test drives it from a thread,
    as systemd would: reload() is a SIGHUP, and the test waits for what it expects."""

    def __init__(self, path):
        self.handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                                  signal.SIGHUP)}
        self.switch_interval = sys.getswitchinterval()  # run() shortens it for the process
        self.daemon = daemon_module.Daemon(load_config(str(path)), notifier=Notifier({}))
        self.daemon.open()

    def serve_while(self, steps):
        """Serve until *steps* (run in a thread) returns, then stop with SIGTERM; what
        *steps* raised is raised here."""
        raised = []

        def drive():
            try:
                steps()
            except BaseException as e:  # handed to the test's thread, raised there
                raised.append(e)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)

        driver = threading.Thread(target=drive, name="test-steps")
        driver.start()
        try:
            self.daemon.run()
        finally:
            driver.join()
        if raised:
            raise raised[0]

    def reload(self, applied=lambda: True, timeout=10.0):
        """SIGHUP; return once the reload has been answered (READY, success or not) and
        *applied* holds (a reload's joins and closes go on after its READY)."""
        attempts = self.daemon.reloads.attempts
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: self.daemon.reloads.attempts > attempts and applied(), timeout,
                   "reload")

    def close(self):
        self.daemon.close()
        sys.setswitchinterval(self.switch_interval)
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)


def groups(daemon):
    return [r.listener.group for r in daemon.responders]


def test_unexpected_error_during_reload_keeps_serving(write_config, monkeypatch):
    running = InProcessDaemon(write_config("interface: lo\ngroup: 224.3.29.77\n"))
    daemon = running.daemon

    def steps():
        def broken(*args, **kwargs):
            raise RuntimeError("a bug in the loader")

        monkeypatch.setattr(reloader, "load_config", broken)
        running.reload()
        assert daemon.reload_problem.startswith("reload failed (internal error")
        assert groups(daemon) == ["224.3.29.77"]
        assert daemon.responders[0].joined
        monkeypatch.undo()
        write_config("interface: lo\ngroup: 224.3.29.78\n")
        running.reload(lambda: groups(daemon) == ["224.3.29.78"] and daemon.responders[0].joined)
        assert daemon.reload_problem is None

    try:
        running.serve_while(steps)
    finally:
        running.close()


def test_reload_whose_new_socket_cannot_bind_changes_nothing(write_config):
    import socket

    running = InProcessDaemon(write_config("interface: lo\ngroup: 224.3.29.71\n"))
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR
    try:
        # another port: the running one is the daemon's whole (its listeners' shared socket)
        squatter.bind(("224.3.29.72", 9998))
        write_config("interface: lo\ngroup: 224.3.29.72\nport: 9998\n")

        def steps():
            running.reload()
            assert running.daemon.reload_problem.startswith(
                "reload failed: cannot bind 224.3.29.72:9998: Address already in use")
            assert groups(running.daemon) == ["224.3.29.71"]
            assert running.daemon.responders[0].joined
            assert running.daemon.config.listeners[0].group == "224.3.29.71"

        running.serve_while(steps)
    finally:
        squatter.close()
        running.close()


def test_buffer_back_to_null_on_reload_is_the_kernel_default_again(write_config):
    from mcast_echo.net.limits import read_limits
    from mcast_echo.net.mcast import granted_buffers

    running = InProcessDaemon(write_config("interface: lo\nrecv_buffer: 1MiB\n"))
    try:
        sock = running.daemon.responders[0].sock
        assert granted_buffers(sock)[0] == 2 << 20
        write_config("interface: lo\n")

        def steps():
            default = read_limits().rmem_default
            running.reload(lambda: granted_buffers(sock)[0] == default)
            assert running.daemon.responders[0].sock is sock  # same socket, same membership

        running.serve_while(steps)
    finally:
        running.close()


def test_any_join_errno_becomes_a_wait_reason_not_a_crash():
    import errno

    from mcast_echo.net.errnoadvice import join_error_text
    assert join_error_text(OSError(errno.ENODEV, "x")).startswith("ENODEV: no such device")
    assert join_error_text(OSError(errno.ENOMEM, "Cannot allocate memory")) \
        == "ENOMEM: Cannot allocate memory"
