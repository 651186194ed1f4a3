"""Who holds a UDP port: /proc/net/udp gives the socket's inode, /proc/PID/fd its process.

Used only to word an error ("already bound by pid 812 (mcast-echo serve ...)"), so every
failure to look (another user's /proc entries, a sandbox that hides them) just means
a vaguer message; nothing here raises.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Optional

MAX_SHOWN = 80  # characters of a command line quoted in a message
MAX_PATH_SHOWN = 30  # a longer path in it is shown by its file name


def socket_inodes(address: str, port: int, proc_root: str = "/proc") -> set[str]:
    """Inodes of IPv4 UDP sockets bound to *port* on *address* or on 0.0.0.0."""
    wanted = {_proc_hex(address, port), _proc_hex("0.0.0.0", port)}
    inodes = set()
    try:
        with open(f"{proc_root}/net/udp") as table:
            next(table, None)  # the column titles
            for line in table:
                fields = line.split()
                if len(fields) > 9 and fields[1] in wanted:
                    inodes.add(fields[9])
    except OSError:
        pass
    return inodes


def _proc_hex(address: str, port: int) -> str:
    """How /proc/net/udp writes an address: the 32-bit value in host order, then the port."""
    value = struct.unpack("=I", socket.inet_aton(address))[0]
    return f"{value:08X}:{port:04X}"


def holder(address: str, port: int, proc_root: str = "/proc") -> Optional[str]:
    """'pid N (command line)' of a process other than us whose socket holds the port."""
    inodes = socket_inodes(address, port, proc_root)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    try:
        pids = [name for name in os.listdir(proc_root) if name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"{proc_root}/{pid}/fd")
            if any(os.readlink(f"{proc_root}/{pid}/fd/{fd}") in targets for fd in fds):
                return f"pid {pid} ({_command(proc_root, pid)})"
        except OSError:
            continue
    return None


def _command(proc_root: str, pid: str) -> str:
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return "?"
    words = raw.rstrip(b"\0").split(b"\0")
    return shown_command([word.decode("utf-8", "replace") for word in words])


def shown_command(argv: list[str]) -> str:
    """A command line short enough to quote, cut only between words: the program by its name
    (a venv's python is as much "python" at any depth) and a long path by ".../" and its file
    name, so what the holder runs ("python -m mcast_echo serve -c .../a.yaml") survives a
    deep checkout; words past MAX_SHOWN characters become "..."."""
    words = [_printable(word) for word in argv if word]
    if not words:
        return "?"
    words[0] = words[0].rsplit("/", 1)[-1] or words[0]
    words[1:] = [f".../{word.rsplit('/', 1)[-1]}" if "/" in word and len(word) > MAX_PATH_SHOWN
                 else word for word in words[1:]]
    shown = words[0][:MAX_SHOWN]
    for word in words[1:]:
        if len(shown) + 1 + len(word) > MAX_SHOWN:
            return shown + " ..."
        shown += " " + word
    return shown


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
