"""The daemon's life: start, serve, reload, stop.

Signal handlers only record the signal (and ``set_wakeup_fd`` wakes the
selector); this loop acts on them, between batches of datagrams, so a flood
never delays SIGTERM by more than one batch. Recorded signals are state, not a
queue: any number of SIGHUPs before the loop looks is one reload, and a
SIGTERM/SIGINT wins over a pending reload, so a signal storm costs at most one
reload at a time. Timers (STATUS, WATCHDOG=1, membership checks, echoes held for a
probe's --spread) are due times checked on every pass.

The loop never waits on work that grows with the number of listeners (#18.8): a
reload reads, diffs and binds in a thread (reloader.py); a round of membership
checks and a reload's per-listener steps are *chores*, generators that the loop
advances for at most CHORE_SLICE seconds per pass, between batches of echoes.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

from ..net import ifaddr, mcast, portowner
from ..net.limits import KernelLimits, membership_reports, read_limits, unprivileged_port_start
from ..net.poller import Poller
from ..net.udpstats import socket_drops
from ..schema.endpoints import Metrics
from ..schema.keys import Config
from ..schema.listener import Listener
from . import echopath, reloader
from .delayed import DelayedReplies
from .logsetup import set_level
from .mping import MpingListener
from .notify import Notifier
from .policy import MAX_TRACKED_SOURCES, share_sources
from .prober import Prober
from .ratelimit import RateLimitedLog
from .reloads import ReloadHistory
from .responder import GroupResponder

if TYPE_CHECKING:  # imported when metrics are on (_metrics_for): prometheus_client takes ~70 ms
    from .exposition import Exposition
    from .metrics import MetricsEndpoint

log = logging.getLogger(__name__)

MEMBERSHIP_CHECK_INTERVAL = 0.5  # interface gone / back / re-created: rejoin within ~1 s
GIL_SWITCH_INTERVAL = 0.0005  # seconds (Python's default: 0.005); see run()
CHORE_SLICE = 0.002  # seconds of chores (membership checks, a reload's steps) per loop pass
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
        # One throttle for the lines an interface event writes for every 'interface: all'
        # listener (a host that adds and removes interfaces must not flood the log).
        self.interface_log = RateLimitedLog(logging.getLogger("mcast_echo.daemon.membership"))
        self.paths = echopath.Paths()
        self.delayed = DelayedReplies()  # echoes held for a probe's --spread, by due time
        self.responders: list[GroupResponder] = []
        self.limits = KernelLimits()
        self.reload_problem: Optional[str] = None
        self.reloads = ReloadHistory()
        self.metrics: Optional[MetricsEndpoint] = None  # the Prometheus endpoint, if on
        self.mping: Optional[MpingListener] = None  # the ssmping / RFC 6450 listener, if on
        self._metrics_registry: Optional[Exposition] = None
        self._stop_signal: Optional[int] = None  # SIGTERM/SIGINT received: leave and exit
        self._reload_pending = False  # SIGHUP(s) received since the last reload began
        self._poller: Optional[Poller] = None
        self._wakeup: Optional[tuple[int, int]] = None
        self._chores: deque[Iterator[None]] = deque()  # advanced a slice per pass (_loop)
        self._checking = False  # a round of membership checks is among the chores
        self._next_check = 0.0
        self._reload_job: Optional[reloader.ReloadJob] = None
        self._stopping: list[GroupResponder] = []  # out of the config, closed by a chore
        self._applying = False  # a reload's steps are among the chores: the next one waits

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
            # Its table is empty until it serves; _share_sources splits the bound before then.
            responder = self._open_responder(listener, MAX_TRACKED_SOURCES)
            self.responders.append(responder)
            responder.sync(now, interfaces)
        if len(self.responders) > 1:
            joined = sum(1 for r in self.responders if r.joined)
            log.info("%d listeners: %d joined, %d waiting", len(self.responders), joined,
                     len(self.responders) - joined)
        self.mping = self._mping_for(self.config)
        self._share_sources()
        self.metrics = self._metrics_for(self.config.metrics)  # bound here, served from run()

    def _open_responder(self, listener: Listener, share: int) -> GroupResponder:
        """Open and bind (joins come after: open(), or the rounds of checks); the caller
        owns it. Safe in the reload thread: it touches nothing the loop uses."""
        responder = GroupResponder(listener, self.hostname, self.drop_log, self.paths,
                                   self.interface_log, share, self.delayed)
        try:
            responder.open(self.limits, time.monotonic())
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
        # The loop gives the GIL up at every system call; with a scrape or a reload busy in
        # another thread it waits the switch interval to get it back, once per call.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self._poller = Poller()
        self._poller.register(self._wakeup[0], None)
        for responder in self.responders:
            if responder.sock is not None:  # else it waits for its interface to bind
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
        self._next_check = now + MEMBERSHIP_CHECK_INTERVAL
        watchdog = self.notifier.watchdog_interval
        next_watchdog = now if watchdog else float("inf")
        next_due = now  # the earliest of the three: one comparison per wake-up
        wait = self._poller.wait
        chores = self._chores
        delayed = self.delayed
        held = delayed.waiting  # its heap: a list's truth per wake-up, not a len() call
        while True:
            if self._stop_signal is not None:  # before any pending reload
                log.info("%s: stopping", signal.Signals(self._stop_signal).name)
                return
            if self._reload_pending and self._reload_job is None and not self._applying:
                # Cleared as the reload begins: a SIGHUP that arrives during it (e.g. a
                # newer edit) gets one more reload once this one is applied, steps and all.
                self._reload_pending = False
                self._reload_job = reloader.ReloadJob(self._begin_reload(), self._wakeup[1])
            if self._reload_job is not None and self._reload_job.done:
                job, self._reload_job = self._reload_job, None
                self._finish_reload(job.plan, job.failure)
                next_status = time.monotonic() + self.config.status_interval  # READY has it
                next_due = 0.0  # and the other timers as they were (a new round is due)
            # `now` was read as the last wait returned: one clock read per wake-up serves the
            # datagrams' arrival and these timers (late by at most that wake-up's echoes)
            if now >= next_due:
                if now >= next_watchdog:
                    self.notifier.watchdog()
                    next_watchdog = now + watchdog  # type: ignore[operator]
                if now >= self._next_check and not self._checking:
                    self._checking = True
                    chores.append(self._membership_round())
                if now >= next_status:
                    line = self.status_line()
                    self.notifier.status(line)
                    log.debug("status: %s", line)  # the counters in the foreground too
                    next_status = now + self.config.status_interval
                next_due = min(next_watchdog, self._next_check, next_status)
            if chores:
                self._run_chores(time.monotonic() + CHORE_SLICE)
            due = min(next_due, delayed.next_due) if held else next_due
            readable = wait(0 if chores else due - now)
            now = time.monotonic()
            for ready in readable:
                if ready is None:
                    _drain(self._wakeup[0])
                else:
                    ready.on_readable(now)
            if held:  # --spread echoes that are due
                delayed.send_due(time.monotonic())

    def _run_chores(self, until: float) -> None:
        """Advance the chores, oldest first, until the time *until* (monotonic)."""
        chores = self._chores
        while chores:
            try:
                next(chores[0])
            except StopIteration:
                chores.popleft()
            if time.monotonic() >= until:
                return

    def _membership_round(self) -> Iterator[None]:
        """One round of membership checks, a listener per step: one look at the interfaces
        (and one route lookup per group) for the whole round."""
        interfaces = mcast.InterfaceSnapshot()
        changed = False
        try:
            for responder in list(self.responders):
                waited_to_bind = responder.sock is None
                changed = responder.check_membership(time.monotonic(), interfaces) or changed
                if waited_to_bind and responder.sock is not None and self._poller is not None:
                    self._poller.register(responder.fileno(), responder)  # bound late
                yield
        finally:
            self._checking = False
            self._next_check = time.monotonic() + MEMBERSHIP_CHECK_INTERVAL
        if changed:
            self.notifier.status(self.status_line())

    # ---------------------------------------------------------------- reload

    def _begin_reload(self) -> Any:
        """RELOADING=1, and the work of reading the file (reloader.prepare), to run in a
        thread: what it needs of the running state is copied here, on the loop."""
        self.notifier.reloading()
        log.info("SIGHUP: reloading %s", self.config.path)
        running = [(responder.bound_to, responder.listener) for responder in self.responders]
        path, overrides, proc_root = self.config.path, dict(self.overrides), self.proc_root

        def open_responder(listener: Listener) -> GroupResponder:
            # Its table is empty until it serves; _apply shares the bound out before then.
            return self._open_responder(listener, MAX_TRACKED_SOURCES)

        def work() -> reloader.Plan:
            return reloader.prepare(path, overrides, running, proc_root, open_responder,
                                    _raise_open_files_limit)
        return work

    def _finish_reload(self, plan: Optional[reloader.Plan], failure: Optional[str]) -> None:
        """Apply *plan* (or record *failure*); READY=1 either way."""
        if plan is not None:
            try:
                self._apply(plan)
            except OSError as e:  # e.g. the new metrics port is taken: nothing was changed
                reloader.discard(plan)
                log.error("reload failed: %s", e.strerror or e)
                failure = f": {e.strerror or e}"
            else:  # a small change is done before READY=1; a large one goes on after it
                self._run_chores(time.monotonic() + CHORE_SLICE)
        self.reloads.record(failure is None)
        if failure is None:
            self.reload_problem = None
            log.info("reloaded: %s", self.status_line())
        else:
            self.reload_problem = f"reload failed{failure}; still serving the previous config"
        self.notifier.ready(self.status_line())

    def _apply(self, plan: reloader.Plan) -> None:
        """Move from the running config to the plan's, rejoining only what changed.

        The new sockets are open already (reloader.prepare); the endpoints are bound
        first here: if one cannot be, OSError is raised with the running config
        untouched. The switch itself is a few list operations; closing what is no longer
        wanted, reconfiguring what changed and joining the new sockets are chores."""
        new = plan.config
        metrics = self._metrics_for(new.metrics)
        mping = self._mping_for(new)
        self.limits = plan.limits
        set_level(new.log_level)
        kept, stopped = [], []
        for responder in self.responders:
            (stopped if responder.bound_to in plan.stopped else kept).append(responder)
        for responder in stopped:
            self._unregister(responder)
        self._stopping.extend(stopped)
        for responder in plan.started:
            if self._poller is not None and responder.sock is not None:
                self._poller.register(responder.fileno(), responder)
        self.responders = kept + plan.started
        self._switch_metrics(metrics)
        self._switch_mping(mping)
        self.config = new
        self._share_sources()
        self._applying = True
        self._chores.appendleft(self._apply_steps(plan.started, stopped,
                                                  [r for r in kept if r.bound_to in plan.changed],
                                                  plan))

    def _apply_steps(self, started: list[GroupResponder], stopped: list[GroupResponder],
                     changed: list[GroupResponder], plan: reloader.Plan) -> Iterator[None]:
        """A reload's per-listener work, a listener per step: join the new sockets, close
        the ones no longer wanted, reconfigure the ones whose settings changed."""
        interfaces = mcast.InterfaceSnapshot()
        try:
            for responder in started:
                if responder.sock is not None and responder.memberships.pending:
                    responder.sync(time.monotonic(), interfaces)
                yield
            for responder in stopped:
                responder.close()
                self._stopping.remove(responder)
                yield
            for responder in changed:  # a newer reload diffs against what this one applied
                responder.reconfigure(plan.changed[responder.bound_to], self.limits,
                                      time.monotonic(), interfaces)
                yield
        finally:
            self._applying = False

    def _share_sources(self) -> None:
        """Split MAX_TRACKED_SOURCES between every rate limiter the daemon has now."""
        limiters = [r.policy.limiter for r in self.responders if r.policy.limiter is not None]
        if self.mping is not None:
            limiters += [p.limiter for p in self.mping.policies.values()
                         if p.limiter is not None]
        share = share_sources(limiters)
        for responder in self.responders:
            responder.tracked_sources = share

    def _unregister(self, responder: GroupResponder) -> None:
        if self._poller is not None and responder.sock is not None:
            self._poller.unregister(responder.fileno())

    def _stop_responder(self, responder: GroupResponder) -> None:
        self._unregister(responder)
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
        listener = MpingListener(settings, self.drop_log, self.paths.guard)
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
            from . import collectors, metrics
        except ImportError as e:  # a start fails with exit 69, a reload is refused
            raise OSError(errno.ENOENT, f"metrics: cannot load prometheus_client ({e}): install "
                          "python3-prometheus-client, or pip install prometheus_client") from None
        if self._metrics_registry is None:
            self._metrics_registry = collectors.build_registry(lambda: self.responders,
                                                               self.reloads, lambda: self.mping)
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
        if self._reload_job is not None:  # a reload half-way: what it opens is not served
            self._reload_job.abandon()
            self._reload_job = None
        self._chores.clear()
        for responder in self.responders:
            self._stop_responder(responder)
        for responder in self._stopping:  # out of the poller already
            responder.close()
        self.responders, self._stopping = [], []
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
            # Pending: a reload's new listeners, joined a slice at a time after it.
            pending = sum(1 for r in responders if r.memberships.pending)
            waiting = [r for r in responders if not r.memberships.pending
                       and (not r.joined or r.memberships.waiting)]
            dropped = sum(sum(r.dropped.values()) for r in responders)
            joined = len(responders) - len(waiting) - pending
            text = f"{len(responders)} listeners, {joined} joined"
            if pending:
                text += f", {pending} joins pending"
            text += (f": received {sum(r.received for r in responders)}, "
                    f"echoed {sum(r.echoed for r in responders)}, dropped {dropped}")
            kernel_drops = sum(r.kernel_drops() or 0 for r in responders)
            if kernel_drops:
                text += f", kernel drops {kernel_drops}"
            if waiting:
                text += "; " + "; ".join(r.status() for r in waiting[:5])
                if len(waiting) > 5:
                    text += f"; and {len(waiting) - 5} more waiting"
        if self.mping is not None:
            text += f"; {self.mping.status()}"
            kernel_drops = sum(socket_drops(handler.sock) or 0 for handler in self.mping.sockets)
            if kernel_drops:
                text += f", kernel drops {kernel_drops}"
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
    if error.errno == errno.EACCES and listener.port < (start := unprivileged_port_start()):
        return (f"cannot bind {where}: Permission denied: port {listener.port} is privileged "
                f"(below net.ipv4.ip_unprivileged_port_start = {start}): run as root, give the "
                "daemon CAP_NET_BIND_SERVICE (the unit: AmbientCapabilities= and "
                "CapabilityBoundingSet= CAP_NET_BIND_SERVICE), lower that sysctl, or use a "
                f"port of {start} or more")
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
