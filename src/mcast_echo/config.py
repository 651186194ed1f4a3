"""The configuration file: schema, loading, and errors that name file, line and fix.

Data flows one way: the YAML file becomes a frozen :class:`Config`, validated
once, before the network is touched. A reload builds a new ``Config`` and the
daemon applies the difference; nothing downstream reads the file again.

Today's file is a flat mapping (``group: ...``, ``port: ...``) that describes
one listener. It becomes ``Config.listeners[0]``, so a later ``listeners:``
list can add groups, ports, IPv6 or SSM without changing what a file written
today means.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import yaml
from yaml.constructor import SafeConstructor

DEFAULT_PATH = "/etc/mcast-echo.yaml"
MAX_FILE_BYTES = 1 << 20  # a config file is a few hundred bytes; refuse anything huge
MAX_DEPTH = 8  # mappings/lists inside each other; the schema needs 2
# Explicit tags that only restate a plain type; anything else (!!python/...) is refused.
SAFE_TAGS = {None, "!"} | {f"tag:yaml.org,2002:{name}" for name in
                           ("str", "int", "float", "bool", "null", "seq", "map", "binary")}
MAX_SHOWN = 60  # characters of a bad value quoted back in a message
MAX_UDP_PAYLOAD = 65507  # 65535 - 20 (IPv4 header) - 8 (UDP header)
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class RateLimit:
    """Token bucket per source address: *rate* datagrams per second, bursts of *burst*."""

    rate: float = 1000.0
    burst: int = 2000


@dataclass(frozen=True)
class Listener:
    """One multicast group on one port, and how its socket is set up."""

    group: str = "224.3.29.71"
    port: int = 9999
    interface: Optional[str] = None  # a name ("eth0") or an IPv4 address; None: route to group
    recv_buffer: Optional[int] = None  # bytes; None: the kernel default (rmem_default)
    send_buffer: Optional[int] = None  # bytes; None: the kernel default (wmem_default)
    ttl: int = 1
    loopback: bool = True
    max_datagram: int = MAX_UDP_PAYLOAD
    allow: Optional[tuple[ipaddress.IPv4Network, ...]] = None  # None: any source
    rate_limit: Optional[RateLimit] = RateLimit()  # None: off

    @property
    def identity(self) -> tuple[str, int, Optional[str]]:
        """What a socket and its membership are made of: changing it means a new socket."""
        return (self.group, self.port, self.interface)


@dataclass(frozen=True)
class Config:
    path: str
    listeners: tuple[Listener, ...] = (Listener(),)
    log_level: str = "info"
    status_interval: float = 5.0


class ConfigError(Exception):
    """One or more problems, each already a complete line for the operator."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Invalid(ValueError):
    """A value failed its check; the message says what is allowed.

    *at* points inside a list (an index) or a mapping (a key), so the error
    names the line of that item rather than of the key that holds it.
    """

    def __init__(self, message: str, at: Any = None) -> None:
        super().__init__(message)
        self.at = at


# ----------------------------------------------------------------- value checks
# Each takes the YAML value and returns the typed value or raises Invalid with
# the text that follows "key: ". The bad value is always quoted back.


def _clip(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + f"... ({len(text)} characters)"


def _show(value: Any) -> str:
    return _clip(_show_whole(value))


def _show_whole(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, tuple):  # allow: networks
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, RateLimit):
        return f"{{rate: {value.rate:g}, burst: {value.burst}}}"
    return str(value)


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{_show(value)} is not an integer (allowed: {low}..{high})")
    if not low <= value <= high:
        raise Invalid(f"{value} is out of range {low}..{high}")
    return value


def check_group(value: Any) -> str:
    try:
        addr = ipaddress.IPv4Address(str(value)) if isinstance(value, str) else None
    except ValueError:
        addr = None
    if addr is None:
        raise Invalid(f"{_show(value)} is not an IPv4 address (allowed: 224.0.0.0 to "
                      "239.255.255.255, e.g. 224.3.29.71)")
    if not addr.is_multicast:
        raise Invalid(f"{value} is not a multicast address (allowed: 224.0.0.0/4, "
                      "e.g. 224.3.29.71; use 239.0.0.0/8 for a private group)")
    return str(addr)


def check_port(value: Any) -> int:
    return _integer(value, 1, 65535)


_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def check_interface(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise Invalid(f"{_show(value)} is not an interface (allowed: a name such as eth0, "
                      "an IPv4 address of this host, or null for the route to the group)")
    if value[0].isdigit() and value.count(".") == 3:
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise Invalid(f"{value} is not a valid IPv4 address") from None
    if not _IFNAME.match(value) or value in (".", ".."):
        raise Invalid(f"{value!r} is not a valid interface name (1-15 characters, "
                      "no spaces or slashes, e.g. eth0)")
    return value


_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1 << 20, "mib": 1 << 20,
          "mb": 1000 ** 2, "g": 1 << 30, "gib": 1 << 30, "gb": 1000 ** 3}
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
MAX_BUFFER = (1 << 31) - 1  # the kernel takes an int


def parse_size(value: Any) -> int:
    """Bytes from ``65536`` or a string such as ``"4MiB"``, ``"512 KiB"``, ``"1M"``."""
    if isinstance(value, bool):
        raise Invalid(f"{_show(value)} is not a size (allowed: bytes such as 4194304, or 4MiB)")
    if isinstance(value, int):
        number = value
    else:
        match = _SIZE.match(value) if isinstance(value, str) else None
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            raise Invalid(f"{_show(value)} is not a size (allowed: bytes such as 4194304, or a "
                          "number with KiB, MiB, GiB, KB, MB, GB)")
        number = int(match.group(1)) * _UNITS[unit]
    if not 1024 <= number <= MAX_BUFFER:
        raise Invalid(f"{_show(value)} is out of range 1KiB..2GiB (1024..{MAX_BUFFER} bytes)")
    return number


def check_buffer(value: Any) -> Optional[int]:
    return None if value is None else parse_size(value)


def check_ttl(value: Any) -> int:
    return _integer(value, 0, 255)


def check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{_show(value)} is not a boolean (allowed: true or false)")
    return value


def check_max_datagram(value: Any) -> int:
    return _integer(value, 1, MAX_UDP_PAYLOAD)


def check_allow(value: Any) -> Optional[tuple[ipaddress.IPv4Network, ...]]:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise Invalid(f"{_show(value)} is not a list of source networks (allowed: e.g. "
                      "[10.0.0.0/8, 192.0.2.7], or null for any source)")
    networks = []
    for index, item in enumerate(value):
        try:
            networks.append(ipaddress.IPv4Network(str(item), strict=False)
                            if isinstance(item, str) else None)
        except ValueError:
            networks.append(None)
        if networks[-1] is None:
            raise Invalid(f"{_show(item)} is not an IPv4 network (allowed: an address or "
                          "CIDR such as 10.0.0.0/8)", at=index)
    return tuple(networks)


RATE_LIMIT_KEYS = ("rate", "burst")


def check_rate_limit(value: Any) -> Optional[RateLimit]:
    if value is False:
        return None
    if not isinstance(value, dict):
        raise Invalid(f"{_show(value)} is not a rate limit (allowed: off, or a mapping "
                      "such as {rate: 1000, burst: 2000})")
    for key in value:
        if key not in RATE_LIMIT_KEYS:
            raise Invalid(f"{_show(key)}: unknown key (allowed: rate, burst)", at=key)
    rate = value.get("rate", RateLimit.rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 1 <= rate <= 10**7:
        raise Invalid(f"rate: {_show(rate)} is not a rate (allowed: 1..10000000 datagrams "
                      "per second per source)", at="rate")
    burst = value.get("burst", RateLimit.burst)
    try:
        burst = _integer(burst, 1, 10**7)
    except Invalid as e:
        raise Invalid(f"burst: {e}", at="burst") from None
    return RateLimit(float(rate), burst)


def check_log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise Invalid(f"{_show(value)} is not a log level (allowed: {', '.join(LOG_LEVELS)})")
    return value.lower()


def check_interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{_show(value)} is not a number of seconds (allowed: 1..3600)")
    if not 1 <= value <= 3600:
        raise Invalid(f"{value} is out of range 1..3600 seconds")
    return float(value)


# key -> (check, which object it belongs to). Order is the order of the shipped file.
LISTENER_KEYS: dict[str, Callable[[Any], Any]] = {
    "group": check_group,
    "port": check_port,
    "interface": check_interface,
    "recv_buffer": check_buffer,
    "send_buffer": check_buffer,
    "ttl": check_ttl,
    "loopback": check_bool,
    "max_datagram": check_max_datagram,
    "allow": check_allow,
    "rate_limit": check_rate_limit,
}
DAEMON_KEYS: dict[str, Callable[[Any], Any]] = {
    "log_level": check_log_level,
    "status_interval": check_interval,
}
ALL_KEYS = {**LISTENER_KEYS, **DAEMON_KEYS}


# ----------------------------------------------------------------- reading the file


def _read_text(path: str) -> str:
    where = f"{path}"
    try:
        # O_NONBLOCK: a FIFO (or device) must not hang check-config or a reload.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                raise ConfigError([f"{where}: not a regular file (a FIFO, socket or device): "
                                   "point -c at a YAML file"])
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{where}: no such file (copy etc/mcast-echo.yaml there, "
                           "or pass -c PATH)"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{where}: is a directory, not a config file (pass -c PATH "
                           "to a YAML file)"]) from None
    except PermissionError:
        raise ConfigError([f"{where}: permission denied (the daemon's user must be able "
                           "to read it: chmod 644 the file and let it reach the directory)"]
                          ) from None
    except OSError as e:
        raise ConfigError([f"{where}: cannot read: {e.strerror or e}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"{where}: larger than {MAX_FILE_BYTES} bytes: not a config file"])
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise ConfigError([f"{where}:{line}: binary data (a NUL byte): not a YAML text file"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError([f"{where}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); "
                           "save the file as UTF-8"]) from None


def _compose(text: str, path: str) -> Optional[yaml.Node]:
    """Parse to a node tree with line numbers, refusing what a config never needs."""
    try:
        # Events first: refuse anchors/aliases before anything could expand them
        # ("billion laughs"), and more than one document.
        documents = depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = event.start_mark.line + 1
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError([f"{path}:{line}: nested more than {MAX_DEPTH} levels "
                                       "deep: a config needs two at most"])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            tag = getattr(event, "tag", None)  # None unless the file wrote one
            if tag not in SAFE_TAGS:
                raise ConfigError([f"{path}:{line}: {_key_on_line(text, line)}YAML tags "
                                   f"({_clip(tag)}) are not allowed here: write plain values"])
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise ConfigError([f"{path}:{event.start_mark.line + 1}: a second YAML "
                                       "document ('---'): put all settings in one"])
            anchor = getattr(event, "anchor", None)
            if isinstance(event, yaml.AliasEvent) or anchor is not None:
                raise ConfigError([f"{path}:{event.start_mark.line + 1}: YAML anchors and "
                                   f"aliases (&{anchor} / *{anchor}) are not allowed here: "
                                   "write each value out"])
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        what = " ".join(part for part in (e.context, e.problem) if part)
        raise ConfigError([f"{where}: YAML syntax error: {what}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: YAML error: {e}"]) from None


_KEY_AT_START = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


def _key_on_line(text: str, line: int) -> str:
    """'port: ' when line *line* of *text* starts with that key, else ''."""
    lines = text.splitlines()
    match = _KEY_AT_START.match(lines[line - 1]) if 0 < line <= len(lines) else None
    return f"{match.group(1)}: " if match else ""


def _value(node: yaml.Node) -> Any:
    """The Python value of a node (anchors, aliases and tags were refused before)."""
    return SafeConstructor().construct_object(node, deep=True)


def _nested_duplicate(node: yaml.Node) -> Optional[tuple[int, str, int]]:
    """(line, key, first line) of a key repeated in a mapping inside *node*, if any."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in current.value:
                line = key_node.start_mark.line + 1
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        return line, key_node.value, seen[key_node.value]
                    seen[key_node.value] = line
                stack.extend((key_node, value_node))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return None


def _line_of(node: yaml.Node, at: Any) -> int:
    """Line of the list item or mapping value *at* inside *node*, else of *node*."""
    if isinstance(node, yaml.SequenceNode) and isinstance(at, int) and at < len(node.value):
        return node.value[at].start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(at):
                return key_node.start_mark.line + 1
    return node.start_mark.line + 1


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, ALL_KEYS, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known keys: " + ", ".join(ALL_KEYS)


def load_config(path: str = DEFAULT_PATH,
                overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Read and validate *path*; *overrides* (from the command line) win over the file.

    Raises ConfigError listing every problem found, each as ``file:line: key: ...``.
    """
    root = _compose(_read_text(path), path)
    if root is None:
        raise ConfigError([f"{path}: the file holds no settings; start from the shipped "
                           "etc/mcast-echo.yaml (write '{}' for all defaults)"])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([f"{path}:{root.start_mark.line + 1}: the file must be a mapping of "
                           f"'key: value' lines, not {_show(_value(root))}"])
    problems: list[str] = []
    values: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        key = _value(key_node) if isinstance(key_node, yaml.ScalarNode) else []
        if not isinstance(key, str):
            problems.append(f"{path}:{line}: {_show(key)}: a key must be a name such as 'port'")
            continue
        if key in first_line:
            problems.append(f"{path}:{line}: {key}: duplicate key (first set on line "
                            f"{first_line[key]}); keep one")
            continue
        first_line[key] = line
        if key not in ALL_KEYS:
            problems.append(f"{path}:{line}: {key}: unknown key; {_did_you_mean(key)}")
            continue
        duplicate = _nested_duplicate(value_node)
        if duplicate is not None:
            problems.append(f"{path}:{duplicate[0]}: {key}: {duplicate[1]}: duplicate key "
                            f"(first set on line {duplicate[2]}); keep one")
            continue
        try:
            values[key] = ALL_KEYS[key](_value(value_node))
        except Invalid as e:
            problems.append(f"{path}:{_line_of(value_node, e.at)}: {key}: {e}")
        except (TypeError, ValueError, yaml.YAMLError) as e:  # e.g. an unhashable mapping key
            problems.append(f"{path}:{value_node.start_mark.line + 1}: {key}: cannot read "
                            f"this value ({e})")
    for key, value in (overrides or {}).items():
        try:
            values[key] = ALL_KEYS[key](value)
        except Invalid as e:
            problems.append(f"command line: --{key.replace('_', '-')}: {e}")
    if problems:
        raise ConfigError(problems)
    listener = Listener(**{k: v for k, v in values.items() if k in LISTENER_KEYS})
    daemon = {k: v for k, v in values.items() if k in DAEMON_KEYS}
    return Config(path=path, listeners=(listener,), **daemon)


def describe(config: Config) -> list[str]:
    """The effective settings, one 'key: value' line each, as check-config prints them."""
    lines = [f"# effective settings from {config.path}"]
    for index, listener in enumerate(config.listeners):
        if len(config.listeners) > 1:
            lines.append(f"# listener {index + 1}")
        for key in LISTENER_KEYS:
            value = getattr(listener, key)
            shown = "off" if key == "rate_limit" and value is None else _show(value)
            lines.append(f"{key}: {shown}")
    for key in DAEMON_KEYS:
        lines.append(f"{key}: {_show(getattr(config, key))}")
    return lines

