"""Reload in-process: even an unexpected error while reading the file keeps the old config."""

import signal

from mcast_echo import daemon as daemon_module
from mcast_echo.config import load_config
from mcast_echo.notify import Notifier


def test_unexpected_error_during_reload_keeps_serving(write_config, monkeypatch):
    config = load_config(str(write_config("interface: lo\ngroup: 224.3.29.77\n")))
    daemon = daemon_module.Daemon(config, notifier=Notifier({}))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                         signal.SIGHUP)}
    daemon.open()
    try:
        def broken(*args, **kwargs):
            raise RuntimeError("a bug in the loader")

        monkeypatch.setattr(daemon_module, "load_config", broken)
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
