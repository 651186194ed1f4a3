"""The mesh's peers (#23): what this host counted of each one, in bounded memory.

A peer is an IPv4 address on the mesh interface that sent this host a probe (it is heard:
the reverse path) or a reply (it answered: the forward path). Each peer keeps both counts,
the time it was last heard, and two sequence windows (wire/seqwindow.py, MESH_WINDOW
probes back) so that a repeated probe or reply is counted once: about 400 bytes a peer.
A peer is never forgotten -- its counters stay at their last value, so that a dead path
shows as a counter that stops, not as a series that vanishes -- and the table holds at
most MAX_MESH_PEERS of them: past that, a datagram from a new address is dropped
(reason "peers-full", and the mesh logs it once).
"""

from __future__ import annotations

from typing import Optional

from ..schema.mesh import MAX_MESH_PEERS
from ..wire.seqwindow import SeqWindow

MESH_WINDOW = 1024  # probes back a repeat is told from a new one: 200 s at interval 0.2


class Peer:
    """One peer's counts (read by a scrape from another thread: plain ints)."""

    __slots__ = ("address", "replies", "heard", "last_heard", "run", "heard_seen",
                 "replies_seen")

    def __init__(self, address: str) -> None:
        self.address = address
        self.replies = 0  # replies from it to this host's probes
        self.heard = 0  # its probes this host heard
        self.last_heard = float("-inf")  # monotonic time of the last one
        self.run: Optional[int] = None  # the run of its probes (wire/mesh.py)
        self.heard_seen = SeqWindow(MESH_WINDOW)
        self.replies_seen = SeqWindow(MESH_WINDOW)


class PeerTable:
    """Every peer, by address, in the order first seen; at most *cap* of them."""

    def __init__(self, cap: int = MAX_MESH_PEERS) -> None:
        self.cap = cap
        self.peers: dict[str, Peer] = {}

    def peer(self, address: str) -> Optional[Peer]:
        """The peer at *address*, new if need be; None when the table is full."""
        found = self.peers.get(address)
        if found is None and len(self.peers) < self.cap:
            found = self.peers[address] = Peer(address)
        return found

    @staticmethod
    def heard(peer: Peer, run: int, sequence: int, now: float) -> bool:
        """Count probe *sequence* of *peer*'s *run*, heard at *now*: False (not counted)
        for a repeat, or one older than the window. A new run (the peer restarted) starts
        a new window."""
        if run != peer.run:
            peer.run, peer.heard_seen = run, SeqWindow(MESH_WINDOW)
        if not peer.heard_seen.mark(sequence):
            return False
        peer.heard += 1
        peer.last_heard = now
        return True

    @staticmethod
    def replied(peer: Peer, sequence: int) -> bool:
        """Count *peer*'s reply to this host's probe *sequence*: False for a repeat."""
        if not peer.replies_seen.mark(sequence):
            return False
        peer.replies += 1
        return True

    def heard_since(self, since: float) -> int:
        """How many peers were heard at or after *since* (monotonic)."""
        return sum(1 for peer in list(self.peers.values()) if peer.last_heard >= since)
