"""This daemon's part in the mesh (#23): probe the mesh group every interval, answer the
other hosts' probes, count who answers and whom it hears.

Two sockets. The *group socket* is bound to (group, port) and joined on the mesh
interface: it hears the other hosts' probes (and nothing else: IP_MULTICAST_ALL is off).
The *host socket* is bound to this host's address on that interface (an ephemeral port):
probes leave from it to the group -- with IP_MULTICAST_LOOP off, so this host never hears
its own -- and replies leave from it by unicast to each prober's source address and
port, and come back to it. So every datagram of the mesh carries, as its source, its
sender's address on the mesh interface, which is what the peers are labelled by.

Everything a peer sends passes the policy of any listener first (policy.py: a real peer,
not one of this host's addresses, the top-level allow and rate limit), then must parse
(wire/mesh.py) and name its IP source as its sender. A probe is answered once (a repeat is
neither counted nor answered), with a reply of 28 bytes, no more than the probe. Replies
to an address whose neighbour does not resolve are held back (sendguard.py). The peers
and their counts are meshpeers.py's.

The loop calls tick() when next_due comes: it sends a probe, every CHECK_INTERVAL looks
whether the interface or its address changed (and moves the sockets if so; while the
interface is missing, the mesh waits and says so), and works out how many peers this host
heard in the last HEARD_INTERVALS intervals -- logging once when that changes state (hears
nobody, hears some, hears all it expects), never per tick.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from typing import Optional

from ..net import ifaddr, mcast
from ..net.ancillary import ARRIVAL_SPACE, ask_for_arrival
from ..schema.mesh import Mesh
from ..wire import mesh as wire
from .meshpeers import MESH_WINDOW, PeerTable
from .policy import Policy, raw_address
from .ratelimit import RateLimitedLog
from .sendguard import SendGuard, SendWatch

log = logging.getLogger(__name__)

HEARD_INTERVALS = 3  # peers_heard: probers heard in the last three intervals
CHECK_INTERVAL = 1.0  # seconds between two looks at the mesh interface and its address
BATCH = 32  # datagrams per wake-up per socket, then the other sockets get their turn
RECV_SIZE = 2048  # a longer probe is read truncated: only its header matters
# Why the mesh did not count a datagram, each in /metrics from 0 at the start: the mesh's own
# reasons, which no listener has (echosink.DROP_REASONS is the listeners' list) ...
MESH_ONLY_REASONS = ("malformed", "duplicate", "late", "peers-full")
# ... and the listeners' reasons that mean the same here, named as the listeners name them.
DROP_REASONS = ("source", "own-address", "acl", "rate", *MESH_ONLY_REASONS, "recv-error",
                "unresolved", "send-error")


class MeshSocket:
    """One of the mesh's two sockets, as the daemon's poller hands its wake-up over."""

    def __init__(self, sock: socket.socket, serve) -> None:
        self.sock = sock
        self._serve = serve

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self, now: float) -> None:
        self._serve(now)


class MeshNode:
    """The mesh a config's `mesh:` describes; owns its sockets (close())."""

    def __init__(self, settings: Mesh, drop_log: RateLimitedLog, guard: SendGuard) -> None:
        """Bind the group socket (OSError if the group and port are taken); joining and the
        host socket wait for the interface (tick())."""
        self.settings = settings
        self.drop_log = drop_log
        self.guard = guard
        self.policy = Policy(False, settings.allow, settings.rate_limit)
        self.peers = PeerTable()
        self.run = int.from_bytes(os.urandom(8), "big")
        self.sent = 0  # probes sent
        self.counts: Counter[str] = Counter()  # "dropped REASON" -> datagrams
        self.address: Optional[str] = None  # this host's address on the interface, once up
        self.ifindex: Optional[int] = None
        self.waiting: Optional[str] = None  # why it cannot probe yet, or None
        self.hearing = ""  # the state last logged: "", "nobody", "some", "all"
        self.heard_now = 0  # peers heard in the last HEARD_INTERVALS intervals, at the last tick
        self.next_due = 0.0  # monotonic time of the next tick
        self._next_check = 0.0
        self._judge_from = float("inf")  # no verdict on hearing before three intervals
        self._full_logged = False
        self._send_watch = SendWatch()
        self._poller = None
        self.group_socket = MeshSocket(_group_socket(settings), self._serve_probes)
        self.host_socket: Optional[MeshSocket] = None

    # ---------------------------------------------------------------- set-up

    def serve(self, poller) -> None:
        """The loop runs: register the sockets with its *poller* (and later ones too)."""
        self._poller = poller
        poller.register(self.group_socket.fileno(), self.group_socket)
        if self.host_socket is not None:
            poller.register(self.host_socket.fileno(), self.host_socket)
        else:  # join now: READY=1 comes next, and should say where the mesh stands
            now = time.monotonic()
            self._next_check = now + CHECK_INTERVAL
            self._check_interface(now)

    def reconfigure(self, settings: Mesh) -> None:
        """The same group and port: a new interval, expect, interface, allow or rate limit,
        in place (the counters go on; on another interface, the peers found there are
        added)."""
        assert settings.identity == self.settings.identity
        if settings.interval != self.settings.interval:
            self.next_due = 0.0  # the new interval from the next tick on
        if settings.interface != self.settings.interface:
            self._leave()
            self._next_check = 0.0  # join the new interface at the next tick
        self.settings = settings
        self.policy = Policy(False, settings.allow, settings.rate_limit)
        self.hearing = ""  # say again how it hears, against the new expect

    def _check_interface(self, now: float) -> None:
        """Join and open the host socket once the interface is there with an address; move
        both if its index or address changed."""
        name = self.settings.interface
        try:
            index: Optional[int] = socket.if_nametoindex(name)
        except OSError:
            index = None
        address = None
        if index is not None:  # SIOCGIFADDR asks any IPv4 socket: the group socket's fd serves
            address = ifaddr.primary_address(self.group_socket.sock, name)
        if address is not None and (index, address) == (self.ifindex, self.address):
            return  # joined there already
        self._leave()
        if index is None or address is None:
            why = "no such device" if index is None else "it has no IPv4 address"
            if self.waiting != why:
                log.warning("mesh: waiting for interface %s (%s)", name, why)
            self.waiting = why
            return
        try:
            mcast.add_membership(self.group_socket.sock, self.settings.group, index)
            host = _host_socket(address, index)
        except OSError as e:
            why = f"cannot join or send on it: {e.strerror or e}"
            if self.waiting != why:
                log.warning("mesh: waiting for interface %s (%s)", name, why)
            self.waiting = why
            return
        self.ifindex, self.address, self.waiting = index, address, None
        self.host_socket = MeshSocket(host, self._serve_replies)
        if self._poller is not None:
            self._poller.register(host.fileno(), self.host_socket)
        self._judge_from = now + HEARD_INTERVALS * self.settings.interval
        self.hearing = ""
        log.info("mesh: probing %s every %g s from %s on %s", self.where, self.settings.interval,
                 address, name)

    def _leave(self) -> None:
        if self.ifindex is not None:
            mcast.drop_membership(self.group_socket.sock, self.settings.group, self.ifindex)
        if self.host_socket is not None:
            if self._poller is not None:
                self._poller.unregister(self.host_socket.fileno())
            self.host_socket.sock.close()
        self.host_socket, self.ifindex, self.address = None, None, None

    def close(self) -> None:
        """Leave the group and close both sockets. Safe to call twice."""
        if self.group_socket.sock.fileno() < 0:
            return
        self._leave()
        if self._poller is not None:
            self._poller.unregister(self.group_socket.fileno())
        self.group_socket.sock.close()
        log.info("mesh: left %s", self.where)

    @property
    def where(self) -> str:
        return f"{self.settings.group}:{self.settings.port}"

    def fds(self) -> list[int]:
        fds = [self.group_socket.fileno()]
        if self.host_socket is not None:
            fds.append(self.host_socket.fileno())
        return fds

    # ---------------------------------------------------------------- the timer

    def tick(self, now: float) -> bool:
        """Probe if due; look at the interface if due; whether how it hears changed (the
        STATUS line is then due again)."""
        if now >= self._next_check:
            self._next_check = now + CHECK_INTERVAL
            self._check_interface(now)
        interval = self.settings.interval
        if now >= self.next_due:
            self.next_due = self.next_due + interval if now - self.next_due < interval \
                else now + interval
            self._probe()
        if self.waiting is not None:
            self.next_due = min(self.next_due, self._next_check)
        return self._judge(now)

    def _probe(self) -> None:
        if self.host_socket is None or self.address is None:
            return
        try:
            self.host_socket.sock.sendto(wire.probe(self.run, self.sent, self.address),
                                         (self.settings.group, self.settings.port))
        except OSError as e:
            self._drop("send-error", "mesh: probe to %s failed: %s", self.where,
                       e.strerror or e)
            return
        self.sent += 1

    def peers_heard(self, now: float) -> int:
        """Peers heard in the last HEARD_INTERVALS intervals before *now* (monotonic)."""
        return self.peers.heard_since(now - HEARD_INTERVALS * self.settings.interval)

    def _judge(self, now: float) -> bool:
        self.heard_now = heard = self.peers_heard(now)
        if now < self._judge_from:
            return False
        expect = self.settings.expect
        others = None if expect is None else expect - 1
        state = "nobody" if heard == 0 else "all" if others is None or heard >= others \
            else "some"
        if state == self.hearing:
            return False
        self.hearing = state
        window = HEARD_INTERVALS * self.settings.interval
        if state == "nobody":
            log.warning("mesh: hears nobody: no peer's probe on %s for %g s (%s does not reach "
                        "this host, or no other mesh host runs)", self.settings.interface,
                        window, self.where)
        elif state == "some":
            log.warning("mesh: hears %d of the %d expected peers", heard, others)
        else:
            log.info("mesh: hears %d peer%s%s", heard, "" if heard == 1 else "s",
                     "" if others is None else " (all expected)")
        return True

    # ---------------------------------------------------------------- receiving

    def _admitted(self, source: tuple, ancdata, now: float) -> bool:
        """Whether a datagram from *source* passes the policy (counted and logged if not)."""
        refused = self.policy.verdict(source, ancdata, now)
        if refused is None:
            return True
        self._drop(refused, "mesh: datagram from %s:%d dropped (%s)", *source[:2], refused)
        return False

    def _serve_probes(self, now: float) -> None:
        """Count and answer up to BATCH probes heard on the group socket."""
        sock = self.group_socket.sock
        host = self.host_socket
        for _ in range(BATCH):
            try:
                data, ancdata, _flags, source = sock.recvmsg(RECV_SIZE, ARRIVAL_SPACE)
            except BlockingIOError:
                return
            except OSError as e:
                self._drop("recv-error", "mesh: receive failed: %s", e)
                return
            if source[0] == self.address or not self._admitted(source, ancdata, now):
                continue  # this host's own (with loop off, never), or refused
            probe = wire.parse(data)
            if probe is None or probe.kind != wire.PROBE or probe.sender != source[0]:
                self._drop("malformed", "mesh: from %s:%d: not a mesh probe of version %d, "
                           "or not from the sender it names", *source[:2], wire.VERSION)
                continue
            peer = self.peers.peer(source[0])
            if peer is None:
                self._peers_full(source[0])
                continue
            if not self.peers.heard(peer, probe.run, probe.sequence, now):
                self.counts["dropped duplicate"] += 1
                continue
            if host is not None and self.address is not None:
                self._answer(host, wire.reply(probe, self.address), source, now)

    def _answer(self, host: MeshSocket, payload: bytes, source: tuple, now: float) -> None:
        unresolved = self.guard.unresolved(False)
        if unresolved and raw_address(source[0]) in unresolved:
            self._drop("unresolved", "mesh: reply to %s:%d held back: the address does "
                       "not resolve (ARP)", *source[:2])
            return
        try:
            host.sock.sendto(payload, source)
        except OSError as e:
            self._send_watch.check_at = 0.0  # EAGAIN, ENOBUFS: look at the queue
            self._drop("send-error", "mesh: reply to %s:%d failed: %s", *source[:2],
                       e.strerror or e)
        if now >= self._send_watch.check_at:
            self.guard.check(host.sock, self._send_watch, False, now)

    def _serve_replies(self, now: float) -> None:
        """Count up to BATCH replies to this host's probes, read from the host socket."""
        if self.host_socket is None:
            return
        sock = self.host_socket.sock
        for _ in range(BATCH):
            try:
                data, source = sock.recvfrom(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:  # an ICMP error for a datagram sent (port unreachable, say)
                continue
            if source[0] == self.address or not self._admitted(source, None, now):
                continue
            answer = wire.parse(data)
            if answer is None or answer.kind != wire.REPLY or answer.sender != source[0] \
                    or answer.run != self.run:
                self._drop("malformed", "mesh: from %s:%d: not a reply to this host's probes",
                           *source[:2])
                continue
            if not self.sent - MESH_WINDOW <= answer.sequence < self.sent:
                self.counts["dropped late"] += 1
                continue
            peer = self.peers.peer(source[0])
            if peer is None:
                self._peers_full(source[0])
            elif not self.peers.replied(peer, answer.sequence):
                self.counts["dropped duplicate"] += 1

    def _peers_full(self, address: str) -> None:
        self.counts["dropped peers-full"] += 1
        if not self._full_logged:
            self._full_logged = True
            log.warning("mesh: %d peers tracked, the most there may be: %s and any other new "
                        "address is dropped (counted as reason peers-full); set allow to the "
                        "mesh's network", self.peers.cap, address)

    def _drop(self, reason: str, message: str, *args: object) -> None:
        self.counts[f"dropped {reason}"] += 1
        self.drop_log.log(f"mesh-{reason}", logging.WARNING, message, *args)

    # ---------------------------------------------------------------- telling

    def status(self) -> str:
        """What STATUS says of the mesh."""
        text = f"mesh {self.where} on {self.settings.interface}"
        if self.waiting is not None:
            return f"{text}: waiting ({self.waiting})"
        if not self.hearing:  # joined less than three intervals ago
            return f"{text} from {self.address}: probes {self.sent}, listening"
        heard, expect = self.heard_now, self.settings.expect
        if expect is not None:
            hears = f"hears {heard} of {expect - 1} expected peers"
        else:
            hears = f"hears {heard} peer{'' if heard == 1 else 's'}"
        if heard == 0:
            hears = f"hears nobody ({hears[6:]})" if expect is not None else "hears nobody"
        answering = sum(1 for peer in self.peers.peers.values() if peer.replies)
        return (f"{text} from {self.address}: probes {self.sent}, {hears}, answered by "
                f"{answering}")


def _group_socket(settings: Mesh) -> socket.socket:
    """Bound to (group, port), no membership yet; OSError if it cannot be bound."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, mcast.IP_MULTICAST_ALL, 0)
        ask_for_arrival(sock, False)  # the arrival interface: policy.py's own-address rule
        sock.bind((settings.group, settings.port))
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"mesh: cannot bind {settings.group}:{settings.port}: "
                               f"{e.strerror or e}") from None
    return sock


def _host_socket(address: str, index: int) -> socket.socket:
    """Bound to this host's *address* on the mesh interface (*index*): probes leave from it,
    out of that interface, not looped back; replies leave from it and come back to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                        mcast.ip_mreqn("0.0.0.0", address, index))
        mcast.set_hops(sock, False, 1, False)
        sock.bind((address, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock

