"""Reload in-process: even an unexpected error while reading the file keeps the old config."""

import signal

from mcast_echo.config import load_config
from mcast_echo.daemon import reloader
from mcast_echo.daemon import service as daemon_module
from mcast_echo.daemon.notify import Notifier


def test_unexpected_error_during_reload_keeps_serving(write_config, monkeypatch):
    config = load_config(str(write_config("interface: lo\ngroup: 224.3.29.77\n")))
    daemon = daemon_module.Daemon(config, notifier=Notifier({}))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                         signal.SIGHUP)}
    daemon.open()
    try:
        def broken(*args, **kwargs):
            raise RuntimeError("a bug in the loader")

        monkeypatch.setattr(reloader, "load_config", broken)
        daemon.reload()
        assert daemon.reload_problem.startswith("reload failed (internal error")
        assert [r.listener.group for r in daemon.responders] == ["224.3.29.77"]
        assert daemon.responders[0].joined
        monkeypatch.undo()
        write_config("interface: lo\ngroup: 224.3.29.78\n")
        daemon.reload()
        assert daemon.reload_problem is None
        assert [r.listener.group for r in daemon.responders] == ["224.3.29.78"]
    finally:
        daemon.close()
        for sig, handler in handlers.items():  # the daemon keeps its own for life; pytest not
            signal.signal(sig, handler)


class InProcessDaemon:
    """A Daemon in this (private-namespace) process, with pytest's signal handlers kept."""

    def __init__(self, path):
        self.handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                                  signal.SIGHUP)}
        self.daemon = daemon_module.Daemon(load_config(str(path)), notifier=Notifier({}))
        self.daemon.open()

    def close(self):
        self.daemon.close()
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)


def test_reload_whose_new_socket_cannot_bind_changes_nothing(write_config):
    import socket

    running = InProcessDaemon(write_config("interface: lo\ngroup: 224.3.29.71\n"))
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR
    try:
        squatter.bind(("224.3.29.72", 9999))
        write_config("interface: lo\ngroup: 224.3.29.72\n")
        running.daemon.reload()
        assert running.daemon.reload_problem.startswith(
            "reload failed: cannot bind 224.3.29.72:9999: Address already in use")
        assert [r.listener.group for r in running.daemon.responders] == ["224.3.29.71"]
        assert running.daemon.responders[0].joined
        assert running.daemon.config.listeners[0].group == "224.3.29.71"
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
        running.daemon.reload()
        assert running.daemon.responders[0].sock is sock  # same socket, same membership
        assert granted_buffers(sock)[0] == read_limits().rmem_default
    finally:
        running.close()


def test_any_join_errno_becomes_a_wait_reason_not_a_crash():
    import errno

    from mcast_echo.net.errnoadvice import join_error_text
    assert join_error_text(OSError(errno.ENODEV, "x")).startswith("ENODEV: no such device")
    assert join_error_text(OSError(errno.ENOMEM, "Cannot allocate memory")) \
        == "ENOMEM: Cannot allocate memory"
