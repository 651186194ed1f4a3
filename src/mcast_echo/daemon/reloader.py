"""A reload's slow half, off the echo loop: read the file, diff it, open the new sockets.

Parsing a config of thousands of listeners takes most of a second, and diffing and
binding thousands of sockets more; none of it needs the loop. A ReloadJob does it in a
thread of its own and wakes the loop when done (a byte on the loop's wakeup pipe);
the loop then applies the Plan: a few list operations, with the per-listener work
(closing, reconfiguring, joining) done a slice at a time between batches of echoes.
Only one job runs at a time (service.py starts the next once this one is applied).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from ..config import ConfigError, load_config
from ..net import ifaddr
from ..net.limits import KernelLimits, read_limits
from ..schema.keys import Config
from ..schema.listener import Listener
from .responder import GroupResponder, socket_key
from .sharedsocket import PortKey, mesh_ports, port_key, sharing_ports

log = logging.getLogger(__name__)

BoundTo = tuple[str, int, Optional[str], bool]


@dataclass
class Plan:
    """What a valid config changes: the new sockets (bound, not joined yet), the running
    listeners whose settings changed, and the sockets no longer wanted."""

    config: Config
    limits: KernelLimits
    started: list[GroupResponder] = field(default_factory=list)
    changed: dict[BoundTo, Listener] = field(default_factory=dict)
    stopped: set[BoundTo] = field(default_factory=set)
    sharing: set[PortKey] = field(default_factory=set)  # the ports that share a socket


class Failed(Exception):
    """The reload cannot be applied; str() is how "reload failed" goes on (logged)."""


def prepare(path: str, overrides: dict, running: Sequence[tuple[BoundTo, Listener]],
            proc_root: str, open_responder: Callable[[Listener, bool], GroupResponder],
            make_room: Callable[[int], None]) -> Plan:
    """Load *path* and open what it adds to *running*; Failed (everything opened here
    closed again) if the file is invalid or a new socket cannot be bound. A new listener
    on a port that shares a socket joins that socket (*open_responder*'s second argument
    says whether its port shares: sharedsocket.py)."""
    try:
        config = load_config(path, overrides)
    except ConfigError as e:
        for problem in e.problems:
            log.error("reload failed: %s", problem)
        raise Failed(f" ({len(e.problems)} error(s), see the log): {e.problems[0]}") from None
    except Exception:  # a bug of ours must not take the running config down with it
        log.exception("reload failed: internal error reading %s", path)
        raise Failed(" (internal error, see the log)") from None
    plan = Plan(config, read_limits(proc_root))
    current = dict(running)
    shared_now = {port_key(listener) for (*_, shared), listener in running if shared}
    unshared_now = {port_key(listener) for (*_, shared), listener in running if not shared}
    plan.sharing = sharing_ports(config.listeners, plan.limits,
                                 len(ifaddr.multicast_interfaces()), shared_now,
                                 mesh_ports(config), unshared_now)
    wanted = {socket_key(listener, port_key(listener) in plan.sharing): listener
              for listener in config.listeners}
    plan.stopped = set(current) - set(wanted)
    make_room(len(wanted) + len(current))
    try:
        for bound_to, listener in wanted.items():
            old = current.get(bound_to)
            if old is None:
                plan.started.append(open_responder(listener, bound_to[-1]))
            elif old != listener:
                plan.changed[bound_to] = listener
    except OSError as e:  # e.g. the new port is taken: nothing was changed
        discard(plan)
        log.error("reload failed: %s", e.strerror or e)
        raise Failed(f": {e.strerror or e}") from None
    except BaseException:
        discard(plan)
        raise
    return plan


def discard(plan: Plan) -> None:
    """Close what a plan opened (it is not to be applied)."""
    for responder in plan.started:
        responder.close()
    plan.started = []


class ReloadJob:
    """prepare() in a thread; *done* once it has a Plan or a failure, *wake* written then."""

    def __init__(self, work: Callable[[], Plan], wake: int) -> None:
        self.plan: Optional[Plan] = None
        self.failure: Optional[str] = None
        self._work = work
        self._wake = wake
        self._done = threading.Event()
        self._lock = threading.Lock()  # the wake-up against abandon(): never a closed fd
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="reload", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _run(self) -> None:
        # Parsing a large file allocates millions of short-lived objects; each would-be
        # collection of them is a full pass over the heap, holding the GIL the echo loop
        # needs (measured at 4,096 listeners: it halved the worst echo gap during a 3.6 MB
        # reload). Reference counting frees them anyway.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self.plan = self._work()
        except Failed as e:
            self.failure = str(e)
        except BaseException:  # never a silent thread death: the loop must hear of it
            log.exception("reload failed: internal error")
            self.failure = " (internal error, see the log)"
        finally:
            if collecting:
                gc.enable()
            with self._lock:
                self._done.set()
                if self._abandoned:
                    if self.plan is not None:
                        discard(self.plan)
                else:
                    try:
                        os.write(self._wake, b"r")
                    except OSError:  # the pipe is full: the loop is awake anyway
                        pass

    def abandon(self) -> None:
        """The daemon stops: a plan made by now is discarded here, a later one by the
        thread, which then writes to no descriptor (the wakeup pipe is about to close).
        A stop never waits for a file to be read."""
        with self._lock:
            self._abandoned = True
            if self.done and self.plan is not None:
                discard(self.plan)
