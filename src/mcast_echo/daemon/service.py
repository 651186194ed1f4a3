"""The daemon's life: start, serve, reload, stop.

Signal handlers only record the signal (and ``set_wakeup_fd`` wakes the
selector); this loop acts on them, between batches of datagrams, so a flood
never delays SIGTERM by more than one batch. Recorded signals are state, not a
queue: any number of SIGHUPs before the loop looks is one reload, and a
SIGTERM/SIGINT wins over a pending reload, so a signal storm costs at most one
reload between two batches of echoes. Timers (STATUS, WATCHDOG=1, membership
checks, echoes held for a probe's --spread) are due times checked on every pass.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import socket
import time
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ..config import ConfigError, load_config
from ..net import ifaddr, mcast, portowner
from ..net.limits import KernelLimits, membership_reports, read_limits
from ..net.poller import Poller
from ..schema import Config, Listener, Metrics
from . import echopath
from .delayed import DelayedReplies
from .logsetup import set_level
from .mping import MpingListener
from .notify import Notifier
from .prober import Prober
from .ratelimit import RateLimitedLog
from .reloads import ReloadHistory
from .responder import GroupResponder, socket_key

if TYPE_CHECKING:  # imported when metrics are on (_metrics_for): prometheus_client takes ~70 ms
    from prometheus_client import CollectorRegistry

    from .metrics import MetricsEndpoint

log = logging.getLogger(__name__)

MEMBERSHIP_CHECK_INTERVAL = 0.5  # interface gone / back / re-created: rejoin within ~1 s
STATUS_LISTENERS = 8  # listeners shown one by one in STATUS; past that, totals
FILES_BESIDE_SOCKETS = 64  # the wakeup pipe, the journal, the notify socket, ...


class Daemon:
    def __init__(self, config: Config, overrides: Optional[Mapping[str, Any]] = None,
                 notifier: Optional[Notifier] = None, proc_root: str = "/proc") -> None:
        self.config = config
        self.overrides = dict(overrides or {})
        self.notifier = notifier or Notifier()
        self.proc_root = proc_root
        self.hostname = socket.gethostname()
        self.drop_log = RateLimitedLog(logging.getLogger("mcast_echo.drops"))
        self.paths = echopath.Paths()
        self.delayed = DelayedReplies()  # echoes held for a probe's --spread, by due time
        self.responders: list[GroupResponder] = []
        self.limits = KernelLimits()
        self.reload_problem: Optional[str] = None
        self.reloads = ReloadHistory()
        self.metrics: Optional[MetricsEndpoint] = None  # the Prometheus endpoint, if on
        self.mping: Optional[MpingListener] = None  # the ssmping / RFC 6450 listener, if on
        self._metrics_registry: Optional[CollectorRegistry] = None
        self._stop_signal: Optional[int] = None  # SIGTERM/SIGINT received: leave and exit
        self._reload_pending = False  # SIGHUP(s) received since the last reload began
        self._poller: Optional[Poller] = None
        self._wakeup: Optional[tuple[int, int]] = None

    # ---------------------------------------------------------------- start

    def open(self) -> None:
        """Read the kernel's limits, bind every socket and join what can be joined.

        Separate from run() so that ``serve --detach`` binds (and fails) in the
        foreground, then hands the open sockets across the fork.
        """
        # Handlers first: a SIGTERM that arrives while we join is acted on, not fatal.
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = (read_end, write_end)
        self._install_signals(write_end)
        self.limits = read_limits(self.proc_root)
        for level, line in membership_reports(self.config, self.limits,
                                              len(ifaddr.multicast_interfaces())):
            log.log(level, "%s", line)
        log.info("echo path: %s", self.paths.name)
        _raise_open_files_limit(len(self.config.listeners))
        now = time.monotonic()
        interfaces = mcast.InterfaceSnapshot()
        for listener in self.config.listeners:
            self.responders.append(self._start_responder(listener, now, interfaces))
        if len(self.responders) > 1:
            joined = sum(1 for r in self.responders if r.joined)
            log.info("%d listeners: %d joined, %d waiting", len(self.responders), joined,
                     len(self.responders) - joined)
        self.mping = self._mping_for(self.config)
        self.metrics = self._metrics_for(self.config.metrics)  # bound here, served from run()

    def _start_responder(self, listener: Listener, now: float,
                         interfaces: mcast.InterfaceSnapshot) -> GroupResponder:
        """Open, bind and (try to) join; the caller adds it to self.responders."""
        responder = GroupResponder(listener, self.hostname, self.drop_log, self.paths,
                                   self.delayed)
        try:
            responder.open(self.limits)
            responder.sync(now, interfaces)
        except OSError as e:
            responder.close()
            raise OSError(e.errno, bind_error_text(listener, e)) from None
        except BaseException:
            responder.close()
            raise
        return responder

    # ---------------------------------------------------------------- run

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit status (0)."""
        assert self._wakeup is not None, "open() first"
        self._poller = Poller()
        self._poller.register(self._wakeup[0], None)
        for responder in self.responders:
            self._poller.register(responder.fileno(), responder)
        self._register_mping(self.mping)
        try:
            if self.metrics is not None:
                self.metrics.start()
            self.notifier.ready(self.status_line())
            log.info("ready: %s", self.status_line())
            self._loop()
        finally:
            self.close()
        return 0

    def _install_signals(self, wakeup_fd: int) -> None:
        # They stay installed until the process exits: a second SIGTERM while we
        # leave the groups is recorded and ignored, not fatal half-way through.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._record_signal)
        signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)

    def _record_signal(self, signum: int, frame: Any) -> None:
        # Only record, and only state (a flag), so a storm of signals is bounded work.
        if signum == signal.SIGHUP:
            self._reload_pending = True
        elif self._stop_signal is None:
            self._stop_signal = signum

    def _loop(self) -> None:
        assert self._poller is not None and self._wakeup is not None
        now = time.monotonic()
        next_status = now + self.config.status_interval
        next_check = now + MEMBERSHIP_CHECK_INTERVAL
        watchdog = self.notifier.watchdog_interval
        next_watchdog = now if watchdog else float("inf")
        next_due = now  # the earliest of the three: one comparison per wake-up
        wait = self._poller.wait
        while True:
            if self._stop_signal is not None:  # before any pending reload
                log.info("%s: stopping", signal.Signals(self._stop_signal).name)
                return
            if self._reload_pending:
                # Cleared before the reload: a SIGHUP that arrives during it (e.g. a
                # newer edit) gets one more reload, after the next batch of echoes.
                self._reload_pending = False
                self.reload()
                next_status = next_due = time.monotonic() + self.config.status_interval
                if self._stop_signal is not None:
                    continue
            now = time.monotonic()
            if now >= next_due:
                if now >= next_watchdog:
                    self.notifier.watchdog()
                    next_watchdog = now + watchdog  # type: ignore[operator]
                if now >= next_check:
                    self._check_memberships(now)
                    next_check = now + MEMBERSHIP_CHECK_INTERVAL
                if now >= next_status:
                    line = self.status_line()
                    self.notifier.status(line)
                    log.debug("status: %s", line)  # the counters in the foreground too
                    next_status = now + self.config.status_interval
                next_due = min(next_watchdog, next_check, next_status)
            delayed = self.delayed
            timeout = min(next_due, delayed.next_due) - now if delayed else next_due - now
            for ready in wait(timeout):
                if ready is None:
                    _drain(self._wakeup[0])
                else:
                    ready.on_readable()
            if delayed:  # --spread echoes that are due (none held: one len() per wake-up)
                delayed.send_due(time.monotonic())

    def _check_memberships(self, now: float) -> None:
        interfaces = mcast.InterfaceSnapshot()  # one look at the interfaces per round
        changed = False
        for responder in self.responders:
            changed = responder.check_membership(now, interfaces) or changed
        if changed:
            self.notifier.status(self.status_line())

    # ---------------------------------------------------------------- reload

    def reload(self) -> None:
        """Re-read the file; apply it if valid, else keep serving the old config."""
        self.notifier.reloading()
        log.info("SIGHUP: reloading %s", self.config.path)
        failure = self._try_reload()
        self.reloads.record(failure is None)
        if failure is None:
            self.reload_problem = None
            log.info("reloaded: %s", self.status_line())
        else:
            self.reload_problem = f"reload failed{failure}; still serving the previous config"
        self.notifier.ready(self.status_line())

    def _try_reload(self) -> Optional[str]:
        """Load and apply the file: None, or how "reload failed" goes on (already logged)."""
        try:
            new = load_config(self.config.path, self.overrides)
        except ConfigError as e:
            for problem in e.problems:
                log.error("reload failed: %s", problem)
            return f" ({len(e.problems)} error(s), see the log): {e.problems[0]}"
        except Exception:  # a bug of ours must not take the running config down with it
            log.exception("reload failed: internal error reading %s", self.config.path)
            return " (internal error, see the log)"
        try:
            self.apply(new)
        except OSError as e:  # e.g. the new port is taken: nothing was changed
            log.error("reload failed: %s", e.strerror or e)
            return f": {e.strerror or e}"
        return None

    def apply(self, new: Config) -> None:
        """Move from the running config to *new*, rejoining only what changed.

        New sockets are opened first: if one cannot be bound, OSError is raised
        with the running config untouched.
        """
        limits = read_limits(self.proc_root)
        wanted = {socket_key(listener): listener for listener in new.listeners}
        running = {responder.bound_to for responder in self.responders}
        now = time.monotonic()
        interfaces = mcast.InterfaceSnapshot()
        _raise_open_files_limit(len(new.listeners) + len(self.responders))
        started: list[GroupResponder] = []
        try:
            for bound_to, listener in wanted.items():
                if bound_to not in running:
                    started.append(self._start_responder(listener, now, interfaces))
            metrics = self._metrics_for(new.metrics)
            mping = self._mping_for(new)
        except BaseException:
            for responder in started:
                responder.close()
            raise
        self.limits = limits
        set_level(new.log_level)
        kept = []
        for responder in self.responders:
            listener = wanted.get(responder.bound_to)
            if listener is None:
                self._stop_responder(responder)
            else:
                responder.reconfigure(listener, self.limits, now, interfaces)
                kept.append(responder)
        for responder in started:
            if self._poller is not None:
                self._poller.register(responder.fileno(), responder)
        self.responders = kept + started
        self._switch_metrics(metrics)
        self._switch_mping(mping)
        self.config = new

    def _stop_responder(self, responder: GroupResponder) -> None:
        if self._poller is not None and responder.sock is not None:
            self._poller.unregister(responder.fileno())
        responder.close()

    def _mping_for(self, config: Config) -> Optional[MpingListener]:
        """The ssmping listener *config* asks for: the running one (reconfigured) on the
        same port, else a new one, bound (OSError if it cannot bind)."""
        settings = config.ssmping
        if settings is None:
            return None
        if self.mping is not None and self.mping.settings.port == settings.port:
            self.mping.reconfigure(settings)
            return self.mping
        listener = MpingListener(settings, self.drop_log)
        listener.open()
        return listener

    def _register_mping(self, listener: Optional[MpingListener]) -> None:
        if listener is not None and self._poller is not None:
            for handler in listener.sockets:
                self._poller.register(handler.fileno(), handler)

    def _switch_mping(self, listener: Optional[MpingListener]) -> None:
        """Serve from *listener* (None: off), closing the one it replaces."""
        if listener is self.mping:
            return
        self._register_mping(listener)
        self._close_mping()
        self.mping = listener

    def _close_mping(self) -> None:
        if self.mping is None:
            return
        for handler in self.mping.sockets:
            if self._poller is not None:
                self._poller.unregister(handler.fileno())
        self.mping.close()
        self.mping = None

    def _metrics_for(self, settings: Optional[Metrics]) -> Optional[MetricsEndpoint]:
        """The endpoint *settings* ask for: the running one if its address is unchanged,
        else a new one, bound but not serving yet (OSError if it cannot bind)."""
        if settings is None:
            return None
        try:
            from . import metrics
        except ImportError as e:  # a start fails with exit 69, a reload is refused
            raise OSError(errno.ENOENT, f"metrics: cannot load prometheus_client ({e}): install "
                          "python3-prometheus-client, or pip install prometheus_client") from None
        if self._metrics_registry is None:
            self._metrics_registry = metrics.build_registry(lambda: self.responders,
                                                            self.reloads)
        prober = Prober(lambda: self.config.listeners) if settings.probe else None
        return metrics.endpoint_for(settings, self.metrics, self._metrics_registry, prober)

    def _switch_metrics(self, endpoint: Optional[MetricsEndpoint]) -> None:
        """Serve from *endpoint* (None: off): the new one starts before the old one stops."""
        if endpoint is not None and self._poller is not None:
            endpoint.start()
        if self.metrics is not None and self.metrics is not endpoint:
            self.metrics.close()
        self.metrics = endpoint

    # ---------------------------------------------------------------- stop

    def close(self) -> None:
        """STOPPING=1, leave every group, close everything. Safe to call twice."""
        if self._wakeup is not None:  # only once, however often close() is called
            self.notifier.stopping()
            if self.responders:
                log.info("totals: %s", self.status_line())
        for responder in self.responders:
            self._stop_responder(responder)
        self.responders = []
        self._close_mping()
        self._switch_metrics(None)
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None

    def status_line(self) -> str:
        """Each listener's counters; past STATUS_LISTENERS of them, the totals and the
        listeners that wait (a STATUS line must stay one short datagram)."""
        responders = self.responders
        if len(responders) <= STATUS_LISTENERS:
            text = "; ".join(r.status() for r in responders) or "no listeners"
        else:
            waiting = [r for r in responders if not r.joined or r.memberships.waiting]
            dropped = sum(sum(r.dropped.values()) for r in responders)
            text = (f"{len(responders)} listeners, {len(responders) - len(waiting)} joined: "
                    f"received {sum(r.received for r in responders)}, "
                    f"echoed {sum(r.echoed for r in responders)}, dropped {dropped}")
            if waiting:
                text += "; " + "; ".join(r.status() for r in waiting[:5])
                if len(waiting) > 5:
                    text += f"; and {len(waiting) - 5} more waiting"
        if self.mping is not None:
            text += f"; {self.mping.status()}"
        spread = self.delayed.status()
        if spread:
            text += f"; {spread}"
        if self.reload_problem:
            text += f" | {self.reload_problem}"
        return text

    def open_fds(self) -> list[int]:
        """Descriptors a detaching DaemonContext must keep open."""
        fds = [r.fileno() for r in self.responders if r.sock is not None]
        if self.metrics is not None:
            fds.append(self.metrics.fileno())
        if self.mping is not None:
            fds.extend(handler.fileno() for handler in self.mping.sockets)
        return fds + list(self._wakeup or ())


def bind_error_text(listener: Listener, error: OSError) -> str:
    """Why a listener's socket could not be bound, and for a port in use, who holds it."""
    where = listener.where
    if error.errno != errno.EADDRINUSE:
        return f"cannot bind {where}: {error.strerror or error}"
    who = portowner.holder(listener.group, listener.port) or "another socket"
    return (f"cannot bind {where}: Address already in use by {who}; a second responder on "
            f"the same group and port would double every echo: stop it (find it with "
            f"`ss -ulpn 'sport = :{listener.port}'`), or set 'share_port: true' in both "
            f"configs if sharing is intended")


def _raise_open_files_limit(listeners: int) -> None:
    """One socket per listener: lift the soft RLIMIT_NOFILE toward the hard one if a
    thousand groups need it (the default soft limit is 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = listeners + FILES_BESIDE_SOCKETS
    if needed <= soft:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    if target < needed:
        log.warning("%d listeners need %d open files, but the hard limit is %d: raise "
                    "LimitNOFILE= in the unit (or ulimit -n)", listeners, needed, hard)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
