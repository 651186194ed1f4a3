"""What a test module leaves behind in the test's namespace: links (bridges, veth ends),
nftables tables, and processes the run started (daemons, host holders, scripts).

The whole suite shares one network namespace, so a bridge left up with 10.77.0.1 makes a
later module's ping leave by the wrong bridge (the route's source address names the first
interface holding it), and an nftables `bridge` table filters every bridge here. conftest.py
takes a Snapshot before each module and, after it, removes what is new and fails the
module's last test naming it: the leak is reported where it was made, and the modules after
it start clean.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from waiting import wait_until

SETTLE = 5.0  # seconds: a closed host's veth end and a killed process take a moment to go


def links() -> frozenset[str]:
    text = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return frozenset(line.split(":")[1].strip().split("@")[0] for line in text.splitlines())


def nft_tables() -> frozenset[str]:
    """'family name' of every nftables table (none without nft)."""
    try:
        done = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    except FileNotFoundError:
        return frozenset()
    return frozenset(line.split(None, 1)[1] for line in done.stdout.splitlines()
                     if line.startswith("table "))


def descendants(root: int) -> frozenset[int]:
    """The living processes below *root* (zombies are not left behind: not counted)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("State", "").startswith("Z"):
            continue
        children.setdefault(int(fields.get("PPid", "0")), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return frozenset(found)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "(gone)"


@dataclass(frozen=True)
class Snapshot:
    links: frozenset[str]
    tables: frozenset[str]
    processes: frozenset[int]

    @classmethod
    def now(cls) -> Snapshot:
        return cls(links(), nft_tables(), descendants(os.getpid()))

    def leftovers(self) -> list[str]:
        """What is here now and was not at the snapshot, after SETTLE s at most."""
        def new() -> Snapshot:
            now = Snapshot.now()
            return Snapshot(now.links - self.links, now.tables - self.tables,
                            now.processes - self.processes)
        try:
            wait_until(lambda: not any(vars(new()).values()), SETTLE, "a clean namespace",
                       step=0.1)
            return []
        except AssertionError:
            left = new()
        return ([f"link {name}" for name in sorted(left.links)] +
                [f"nft table {name}" for name in sorted(left.tables)] +
                [f"process {pid}: {command_line(pid)}" for pid in sorted(left.processes)])

    def restore(self) -> None:
        """Kill the processes started since the snapshot (by pid), delete its new tables and
        links."""
        for pid in descendants(os.getpid()) - self.processes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for table in nft_tables() - self.tables:
            subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True)
        for name in links() - self.links:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
