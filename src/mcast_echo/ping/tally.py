"""What one run of `mcast-echo ping` tallies: its responders' stats by source, bounded
(``ResponderTable``), and the counts outside them (``RunCounts``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable, Optional

from .responderstats import ResponderStats

MAX_RESPONDERS = 4096  # sources tracked per run: any group member can answer from many more


class ResponderTable:
    """The responders of one run, by source address and port, MAX_RESPONDERS at most.

    Any group member can answer from as many addresses and ports as it likes, so
    the table stops growing at its limit: echoes from further sources are counted,
    not kept, and the summary says so.
    """

    def __init__(self, group_port: int, limit: int = MAX_RESPONDERS,
                 stats_type: type = ResponderStats,
                 is_local: Optional[Callable[[str], bool]] = None,
                 hears_group: bool = True) -> None:
        self.group_port = group_port
        self.limit = limit
        self.stats_type = stats_type
        self.is_local = is_local  # local.py's ThisHost; None: nothing is local
        self.hears_group = hears_group  # False: group echoes cannot be heard, nor judged
        self.untracked_echoes = 0
        self._by_source: dict[tuple[str, int], ResponderStats] = {}

    def lookup(self, address: str, port: int) -> Optional[ResponderStats]:
        """The stats of this source, new if there is room; None (and counted) if full."""
        stats = self._by_source.get((address, port))
        if stats is None:
            if len(self._by_source) >= self.limit:
                self.untracked_echoes += 1
                return None
            stats = self.stats_type(address, port, wrong_port=port != self.group_port,
                                    hears_group=self.hears_group)
            stats.local = self.is_local is not None and self.is_local(address)
            self._by_source[(address, port)] = stats
        return stats

    def in_order(self) -> list[ResponderStats]:
        return sorted(self._by_source.values(), key=_address_order)

    def __iter__(self):
        return iter(self._by_source.values())

    def answered(self) -> int:
        """Responders that count: what --expect, success, the textfile and /probe count.

        An intact echo from the group's port (docs/protocol.md; one host answering from
        N ports is not N responders), from another host than this one, and by the group
        when the responder echoes there.
        """
        return sum(1 for s in self._by_source.values() if s.counted)

    def local(self) -> list[ResponderStats]:
        """This host's own responders that answered: shown, never counted."""
        return [s for s in self._by_source.values() if s.local and s.received]

    def group_lost(self) -> list[ResponderStats]:
        """Responders that answered, but none of whose echoes to the group arrived."""
        return [s for s in self._by_source.values()
                if s.received and s.group_lost and not s.local and not s.wrong_port]

    def wrong_port(self) -> int:
        return sum(1 for s in self._by_source.values() if s.wrong_port)


@dataclass
class RunCounts:
    """What a run counts outside the per-responder stats."""

    transmitted: int = 0
    send_errors: int = 0
    stray: int = 0  # datagrams that are no echo of a probe this run sent
    late: int = 0  # echoes of probes older than SEQ_WINDOW: no send time left to match


def _address_order(stats: ResponderStats) -> tuple:
    address = ipaddress.ip_address(stats.address)
    return (address.version, address, stats.port)

