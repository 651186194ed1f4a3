"""The daemon's life: start, serve, reload, stop.

Signal handlers only record the signal (signals.py: ``set_wakeup_fd`` wakes the
selector); this loop acts on them, between batches of datagrams, so a flood
never delays SIGTERM by more than one batch. Recorded signals are state, not a
queue: any number of SIGHUPs before the loop looks is one reload, and a
SIGTERM/SIGINT wins over a pending reload, so a signal storm costs at most one
reload at a time. Timers (STATUS, WATCHDOG=1, membership checks, echoes held for a
probe's --spread) are due times checked on every pass. The STATUS text is
statusline.py's; the ssmping listener, the mesh (its probes are one more timer) and the
metrics endpoint, endpoints.py's; what the
host sets against opening the sockets (and how to fix it), hostlimits.py's.

The loop never waits on work that grows with the number of listeners (#18.8): a
reload reads, diffs and binds in a thread (reloader.py); a round of membership
checks and a reload's per-listener steps are *chores*, generators that the loop
advances for at most CHORE_SLICE seconds per pass, between batches of echoes.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from collections import deque
from typing import Any, Iterator, Mapping, Optional

from ..net import ifaddr, mcast
from ..net.limits import KernelLimits, read_limits, start_reports
from ..net.poller import Poller
from ..schema.keys import Config
from ..schema.listener import Listener
from . import echopath, reloader, statusline
from .delayed import DelayedReplies
from .endpoints import Endpoints
from .hostlimits import bind_error_text, raise_open_files_limit
from .logsetup import set_level
from .notify import Notifier
from .policy import MAX_TRACKED_SOURCES, share_sources
from .ratelimit import RateLimitedLog
from .reloads import ReloadHistory
from .responder import GroupResponder
from .sharedsocket import PortSocket, PortSockets, mesh_ports, port_key, sharing_ports
from .signals import RecordedSignals, drain

log = logging.getLogger(__name__)

MEMBERSHIP_CHECK_INTERVAL = 0.5  # interface gone / back / re-created: rejoin within ~1 s
GIL_SWITCH_INTERVAL = 0.0005  # seconds (Python's default: 0.005); see run()
CHORE_SLICE = 0.002  # seconds of chores (membership checks, a reload's steps) per loop pass


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
        # the sockets that ports' listeners share (sharedsocket.py), and which ports do
        self.ports = PortSockets(self.paths, self.drop_log)
        self.ports.closing = self._unregister_reader
        self.sharing: set[tuple[bool, int]] = set()
        self.limits = KernelLimits()
        self.reload_problem: Optional[str] = None
        self.reloads = ReloadHistory()
        # The ssmping listener and the Prometheus endpoint, if the config turns them on.
        self.endpoints = Endpoints(self.drop_log, self.paths.guard, lambda: self.responders,
                                   self.reloads, lambda: self.config.listeners, self.ports)
        self._signals: Optional[RecordedSignals] = None  # from open() on
        self._poller: Optional[Poller] = None
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
        self._signals = RecordedSignals()
        self.limits = read_limits(self.proc_root)
        for level, line in start_reports(self.config, self.limits,
                                         len(ifaddr.multicast_interfaces())):
            log.log(level, "%s", line)
        log.info("echo path: %s", self.paths.name)
        raise_open_files_limit(len(self.config.listeners))
        now = time.monotonic()
        interfaces = mcast.InterfaceSnapshot()
        self.sharing = sharing_ports(self.config.listeners, self.limits,
                                     len(ifaddr.multicast_interfaces()),
                                     taken=mesh_ports(self.config))
        for ipv6, port in sorted(self.sharing):
            log.info("port %d (%s): its listeners share one socket", port,
                     "IPv6" if ipv6 else "IPv4")
        for listener in self.config.listeners:
            # Its table is empty until it serves; _share_sources splits the bound before then.
            responder = self._open_responder(listener, MAX_TRACKED_SOURCES,
                                             port_key(listener) in self.sharing)
            self.responders.append(responder)
        # Last listed first: the kernel finds a shared socket's membership of each datagram by
        # walking the socket's list, newest join first, so the first listed are found first
        for responder in reversed(self.responders):
            responder.sync(now, interfaces)
        if len(self.responders) > 1:
            joined = sum(1 for r in self.responders if r.joined)
            log.info("%d listeners: %d joined, %d waiting", len(self.responders), joined,
                     len(self.responders) - joined)
        self.endpoints.switch_mping(self.endpoints.mping_for(self.config.ssmping))
        self.endpoints.switch_mesh(self.endpoints.mesh_for(self.config.mesh))
        self._share_sources()
        # Bound here, served from run().
        self.endpoints.switch_metrics(self.endpoints.metrics_for(self.config.metrics))

    def _open_responder(self, listener: Listener, share: int, shared: bool) -> GroupResponder:
        """Open and bind (joins come after: open(), or the rounds of checks); the caller
        owns it. *shared*: its port's listeners share a socket (sharedsocket.py). Safe in
        the reload thread: it touches nothing the loop uses (a port socket's table of
        groups takes the new one under its lock; nothing is sent to it before it joins)."""
        responder = GroupResponder(listener, self.hostname, self.drop_log, self.paths,
                                   self.interface_log, share, self.delayed,
                                   self.ports if shared else None)
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
        assert self._signals is not None, "open() first"
        # The loop gives the GIL up at every system call; with a scrape or a reload busy in
        # another thread it waits the switch interval to get it back, once per call.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self._poller = Poller()
        self._poller.register(self._signals.read_end, None)
        for responder in self.responders:
            self._register(responder)  # (one waiting for its interface to bind: later)
        try:
            self.endpoints.serve(self._poller)
            self.notifier.ready(self.status_line())
            log.info("ready: %s", self.status_line())
            self._loop()
        finally:
            self.close()
        return 0

    def _loop(self) -> None:
        assert self._poller is not None and self._signals is not None
        signals = self._signals
        wakeup_fd = signals.read_end
        now = time.monotonic()
        next_status = now + self.config.status_interval
        self._next_check = now + MEMBERSHIP_CHECK_INTERVAL
        watchdog = self.notifier.watchdog_interval
        next_watchdog = now if watchdog else float("inf")
        next_mesh = now  # the mesh's timer (probes), never without a mesh
        next_due = now  # the earliest of the timers: one comparison per wake-up
        wait = self._poller.wait
        chores = self._chores
        delayed = self.delayed
        held = delayed.waiting  # its heap: a list's truth per wake-up, not a len() call
        while True:
            if signals.stop is not None:  # before any pending reload
                log.info("%s: stopping", signal.Signals(signals.stop).name)
                return
            if signals.reload_pending and self._reload_job is None and not self._applying:
                # Cleared as the reload begins: a SIGHUP that arrives during it (e.g. a
                # newer edit) gets one more reload once this one is applied, steps and all.
                signals.reload_pending = False
                self._reload_job = reloader.ReloadJob(self._begin_reload(), signals.write_end)
            if self._reload_job is not None and self._reload_job.done:
                job, self._reload_job = self._reload_job, None
                self._finish_reload(job.plan, job.failure)
                next_status = time.monotonic() + self.config.status_interval  # READY has it
                next_mesh = 0.0  # a mesh new or reconfigured: it says when it is due
                next_due = 0.0  # and the other timers as they were (a new round is due)
            # `now` was read as the last wait returned: one clock read per wake-up serves the
            # datagrams' arrival and these timers (late by at most that wake-up's echoes)
            if now >= next_due:
                if now >= next_watchdog:
                    self.notifier.watchdog()
                    next_watchdog = now + watchdog  # type: ignore[operator]
                if now >= self._next_check and not self._checking:
                    self.ports.count()  # what batches served as one left to count
                    self._checking = True
                    chores.append(self._membership_round())
                if now >= next_mesh:
                    next_mesh, changed = self.endpoints.tick_mesh(now)
                    if changed:
                        next_status = now  # how the mesh hears is news: STATUS now
                if now >= next_status:
                    line = self.status_line()
                    self.notifier.status(line)
                    log.debug("status: %s", line)  # the counters in the foreground too
                    next_status = now + self.config.status_interval
                next_due = min(next_watchdog, self._next_check, next_status, next_mesh)
            if chores:
                self._run_chores(time.monotonic() + CHORE_SLICE)
            due = min(next_due, delayed.next_due) if held else next_due
            readable = wait(0 if chores else due - now)
            now = time.monotonic()
            for ready in readable:
                if ready is None:
                    drain(wakeup_fd)
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
                if waited_to_bind and responder.sock is not None:
                    self._register(responder)  # bound late
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

        def open_responder(listener: Listener, shared: bool) -> GroupResponder:
            # Its table is empty until it serves; _apply shares the bound out before then.
            return self._open_responder(listener, MAX_TRACKED_SOURCES, shared)

        def work() -> reloader.Plan:
            return reloader.prepare(path, overrides, running, proc_root, open_responder,
                                    raise_open_files_limit)
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
        metrics = self.endpoints.metrics_for(new.metrics)
        mping = self.endpoints.mping_for(new.ssmping)
        try:
            mesh = self.endpoints.mesh_for(new.mesh)
        except OSError:
            if metrics is not self.endpoints.metrics and metrics is not None:
                metrics.close()
            if mping is not self.endpoints.mping and mping is not None:
                mping.close()
            raise
        self.limits = plan.limits
        set_level(new.log_level)
        kept, stopped = [], []
        for responder in self.responders:
            (stopped if responder.bound_to in plan.stopped else kept).append(responder)
        for responder in stopped:
            self._unregister(responder)
        self._stopping.extend(stopped)
        for responder in plan.started:
            self._register(responder)
        self.responders = kept + plan.started
        self.sharing = plan.sharing
        self.endpoints.switch_metrics(metrics)
        self.endpoints.switch_mping(mping)
        self.endpoints.switch_mesh(mesh)
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
        if self.endpoints.mping is not None:
            limiters += [p.limiter for p in self.endpoints.mping.policies.values()
                         if p.limiter is not None]
        mesh = self.endpoints.mesh
        if mesh is not None and mesh.policy.limiter is not None:
            limiters.append(mesh.policy.limiter)
        share = share_sources(limiters)
        for responder in self.responders:
            responder.tracked_sources = share

    def _register(self, responder: GroupResponder) -> None:
        """Poll *responder*'s socket (its port's: once for all its listeners)."""
        if self._poller is not None and responder.sock is not None:
            self._poller.register(responder.fileno(), responder.reader)

    def _unregister(self, responder: GroupResponder) -> None:
        """Stop polling *responder*'s own socket (a port socket: when it closes)."""
        if responder.port_socket is None:
            self._unregister_reader(responder)

    def _unregister_reader(self, reader: GroupResponder | PortSocket) -> None:
        if self._poller is not None and reader.sock is not None:
            self._poller.unregister(reader.fileno())

    def _stop_responder(self, responder: GroupResponder) -> None:
        self._unregister(responder)
        responder.close()

    # ---------------------------------------------------------------- stop

    def close(self) -> None:
        """STOPPING=1, leave every group, close everything. Safe to call twice."""
        if self._signals is not None:  # only once, however often close() is called
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
        self.endpoints.close()
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        if self._signals is not None:
            self._signals.close()
            self._signals = None

    def status_line(self) -> str:
        """The STATUS text of the daemon as it stands (statusline.py)."""
        self.ports.count()
        return statusline.status_line(self.responders, self.endpoints.mping, self.delayed,
                                      self.reload_problem, self.endpoints.mesh, self.ports)

    def open_fds(self) -> list[int]:
        """Descriptors a detaching DaemonContext must keep open."""
        fds = sorted({r.fileno() for r in self.responders if r.sock is not None})
        fds += self.endpoints.fds()
        if self._signals is not None:
            fds += [self._signals.read_end, self._signals.write_end]
        return fds

