"""The configuration file: reading it, and errors that name file, line and fix.

This is the one reader: the daemon (serve, check-config, limits, a reload) and
`mcast-echo ping --config` both call load_config, each with its own words for a
file it cannot open (yamlsafe.FileAdvice). The keys and their checks live in
schema/; yamlsafe.py turns the file into nodes with line numbers, refusing what a
config never needs; this module runs the checks on those nodes, so every problem is
reported as ``file:line: key: ...``.

Data flows one way: the YAML file becomes a frozen :class:`Config`, validated
once, before the network is touched. A reload builds a new ``Config`` and the
daemon applies the difference; nothing downstream reads the file again.

A file without ``listeners:`` is a flat mapping (``group: ...``, ``port: ...``)
that describes one listener, ``Config.listeners[0]``. With a ``listeners:`` list,
each item is a listener and the top-level listener keys are the defaults of every
item; the daemon's own keys (log_level, status_interval, metrics, ssmping, mesh) stand
at the top level only.
"""

from __future__ import annotations

import difflib
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Optional

import yaml

from .addresses import ASMPING_GROUPS, asmping_can_ask, is_never_routed_group
from .schema.keys import (
    ALL_KEYS,
    DAEMON_KEYS,
    LISTENER_KEYS,
    LISTENERS,
    MAX_LISTENERS,
    Config,
    check_key,
)
from .schema.listener import Listener, listener_problems
from .schema.mesh import Mesh
from .schema.policy import RateLimit
from .schema.values import Invalid, show, spell
from .yamlsafe import (
    DAEMON_ADVICE,
    PING_ADVICE,
    ConfigError,
    FileAdvice,
    Unreadable,
    compose,
    nested_duplicate,
    node_shown,
    node_value,
    read_text,
)

__all__ = ["DAEMON_ADVICE", "DEFAULT_PATH", "PING_ADVICE", "ConfigError", "FileAdvice",
           "describe", "load_config"]

DEFAULT_PATH = "/etc/mcast-echo.yaml"


def _line_of(node: yaml.Node, at: Any) -> int:
    """Line of what *at* points to inside *node*: a list item (an index), a mapping's key,
    or a path of them (a tuple, outermost first); else, or if it is not there, of *node*."""
    path = () if at is None else at if isinstance(at, tuple) else (at,)
    for depth, step in enumerate(path):
        if isinstance(node, yaml.SequenceNode) and isinstance(step, int) \
                and 0 <= step < len(node.value):
            node = node.value[step]
        elif isinstance(node, yaml.MappingNode):
            pair = next(((key, value) for key, value in node.value
                         if isinstance(key, yaml.ScalarNode) and key.value == str(step)), None)
            if pair is None:
                break
            if depth == len(path) - 1:
                return pair[0].start_mark.line + 1  # a key's own line
            node = pair[1]
        else:
            break
    return node.start_mark.line + 1


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known keys: " + ", ".join(known)


TOP_KEYS = (*ALL_KEYS, LISTENERS)


@dataclass
class _Settings:
    """What one mapping of the file set: the checked values, and where each key stands."""

    line: int  # of the mapping itself (a listener's item)
    values: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, yaml.Node] = field(default_factory=dict)  # key -> its value node
    lines: dict[str, int] = field(default_factory=dict)  # key -> line of the key
    failed: set[str] = field(default_factory=set)  # keys whose value failed its check


def _read_settings(node: yaml.MappingNode, path: str, prefix: str,
                   problems: list[str]) -> _Settings:
    """Check each key of the file's top level (*prefix* "") or of one listener."""
    top_level = not prefix
    known = TOP_KEYS if top_level else tuple(LISTENER_KEYS)
    settings = _Settings(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        try:
            key = node_value(key_node) if isinstance(key_node, yaml.ScalarNode) else []
        except Unreadable as e:
            problems.append(f"{path}:{e.line}: {prefix}{e}; a key must be a name such as 'port'")
            continue
        if not isinstance(key, str):
            problems.append(f"{path}:{line}: {prefix}{show(key)}: a key must be a name such as "
                            "'port'")
            continue
        if key in settings.lines:
            problems.append(f"{path}:{line}: {prefix}{show(key)}: duplicate key (first set on "
                            f"line {settings.lines[key]}); keep one")
            continue
        settings.lines[key] = line
        if key not in known:
            if key == LISTENERS:
                problems.append(f"{path}:{line}: {prefix}{key}: listeners do not nest: list "
                                "each one at the top level")
            elif key in TOP_KEYS:
                problems.append(f"{path}:{line}: {prefix}{key}: only at the top level (it is "
                                "the daemon's, not a listener's): move it out of listeners")
            else:
                problems.append(f"{path}:{line}: {prefix}{show(key)}: unknown key; "
                                f"{_did_you_mean(key, known)}")
            continue
        settings.nodes[key] = value_node
        if key == LISTENERS:
            continue  # read item by item, in load_config
        duplicate = nested_duplicate(value_node)
        if duplicate is not None:
            problems.append(f"{path}:{duplicate[0]}: {prefix}{key}: {show(duplicate[1])}: "
                            f"duplicate key (first set on line {duplicate[2]}); keep one")
            settings.failed.add(key)
            continue
        try:
            settings.values[key] = check_key(key, node_value(value_node))
            continue
        except Unreadable as e:
            problems.append(f"{path}:{e.line}: {prefix}{key}: {e}")
        except Invalid as e:
            problems.extend(f"{path}:{_line_of(value_node, one.at)}: {prefix}{key}: {one}"
                            for one in e.each())
        except (TypeError, ValueError, yaml.YAMLError) as e:  # e.g. an unhashable mapping key
            problems.append(f"{path}:{value_node.start_mark.line + 1}: {prefix}{key}: cannot "
                            f"read this value ({e})")
        settings.failed.add(key)
    return settings


_LISTENER_EXAMPLE = "{group: 239.1.1.1, port: 5000}"


def _read_listeners(node: yaml.Node, line: int, path: str,
                    problems: list[str]) -> list[_Settings]:
    """The items of `listeners:` (on *line*), each read like the top level; none on a
    problem with the list itself."""
    where = f"{path}:{line}: {LISTENERS}:"
    flat = "leave the key out for one listener from the top-level keys"
    if not isinstance(node, yaml.SequenceNode):
        problems.append(f"{where} {node_shown(node)} is not a list of listeners (allowed: a list "
                        f"of mappings such as - {_LISTENER_EXAMPLE}), or {flat}")
        return []
    if not node.value:
        problems.append(f"{where} an empty list: list at least one listener "
                        f"(- {_LISTENER_EXAMPLE}), or {flat}")
        return []
    if len(node.value) > MAX_LISTENERS:
        problems.append(f"{where} {len(node.value)} listeners, more than {MAX_LISTENERS}: split "
                        "them over several daemons, each with its own config file")
        return []
    listeners = []
    for index, item in enumerate(node.value):
        if isinstance(item, yaml.MappingNode):
            listeners.append(_read_settings(item, path, f"{LISTENERS}[{index}].", problems))
        else:
            problems.append(f"{path}:{item.start_mark.line + 1}: {LISTENERS}[{index}]: "
                            f"{node_shown(item)} is not a listener (allowed: a mapping of listener "
                            f"keys such as {_LISTENER_EXAMPLE})")
            listeners.append(_Settings(item.start_mark.line + 1, failed={"group"}))
    return listeners


def _place(key: str, at: Any, top: _Settings, item: Optional[_Settings],
           index: Optional[int]) -> tuple[int, str, str]:
    """(line, name, note) for a problem of *key* in a listener (*index* None: the flat file):
    the line where the listener sets it; else the listener's line, noting the top-level
    value it inherits; else, for a default, the line of the group."""
    name = key if index is None else f"{LISTENERS}[{index}].{key}"
    own = item if item is not None else top
    if key in own.nodes:
        return _line_of(own.nodes[key], at), name, ""
    if item is not None and key in top.nodes:
        return item.line, name, (f" (the top-level {key} on line {top.lines[key]} applies "
                                 "here; set another in this listener)")
    return own.lines.get("group", own.line), name, ""  # a default: the group is the cause


def load_config(path: str = DEFAULT_PATH, overrides: Optional[Mapping[str, Any]] = None,
                advice: FileAdvice = DAEMON_ADVICE) -> Config:
    """Read and validate *path*; *overrides* (from the command line) win over the file,
    for every listener. *advice* is how the command reading it says to fix a file it
    cannot read: DAEMON_ADVICE (-c PATH, the daemon's user) or PING_ADVICE (--config).

    Without a `listeners:` list, the top-level keys are the one listener; with it, they are
    the defaults of each listener. Raises ConfigError listing every problem found, each as
    ``file:line: key: ...``.
    """
    root = compose(read_text(path, advice), path)
    if root is None:
        raise ConfigError([f"{path}: the file holds no settings; start from the shipped "
                           "etc/mcast-echo.yaml (write '{}' for all defaults)"])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([f"{path}:{root.start_mark.line + 1}: the file must be a mapping of "
                           f"'key: value' lines, not {node_shown(root)}"])
    problems: list[str] = []
    top = _read_settings(root, path, "", problems)
    items = (_read_listeners(top.nodes[LISTENERS], top.lines[LISTENERS], path, problems)
             if LISTENERS in top.nodes else [None])
    command_line: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        try:
            command_line[key] = check_key(key, value)
        except Invalid as e:
            problems.extend(f"command line: --{key.replace('_', '-')}: {one}" for one in e.each())
    defaults = {k: v for k, v in top.values.items() if k in LISTENER_KEYS}
    listeners = []
    first_at: dict[tuple[str, int], tuple[int, int]] = {}  # (group, port) -> (index, line)
    for index, item in enumerate(items):
        failed = top.failed if item is None else item.failed | (top.failed - set(item.values))
        if failed & set(LISTENER_KEYS):
            continue  # its keys are reported already; their contradictions would only repeat
        values = {**defaults, **(item.values if item is not None else {}),
                  **{k: v for k, v in command_line.items() if k in LISTENER_KEYS}}
        listener = Listener(**values)
        listeners.append(listener)
        number = None if item is None else index
        for key, problem in listener_problems(listener):
            line, name, note = _place(key, problem.at, top, item, number)
            if key in command_line:
                note = f" (set by --{key.replace('_', '-')} on the command line)"
            problems.append(f"{path}:{line}: {name}: {problem}{note}")
        if item is not None:
            first = first_at.setdefault((listener.group, listener.port), (index, item.line))
            if first[0] != index:
                problems.append(
                    f"{path}:{item.line}: {LISTENERS}[{index}]: group {listener.group} port "
                    f"{listener.port} is already {LISTENERS}[{first[0]}] (line {first[1]}): one "
                    "listener per group and port; use interface: all, or another port")
    mesh = top.values.get("mesh")
    if mesh is not None:
        problems.extend(f"{path}:{_line_of(top.nodes['mesh'], key)}: mesh: {problem}"
                        for key, problem in mesh_problems(mesh, listeners,
                                                          defaults.get("allow")))
    if problems:
        raise ConfigError(sorted(problems, key=lambda problem: _problem_line(problem, path)))
    daemon = {k: v for k, v in {**top.values, **command_line}.items() if k in DAEMON_KEYS}
    for key in ("ssmping", "mesh"):  # answered under the top-level allow and rate_limit
        if daemon.get(key) is not None:
            daemon[key] = replace(daemon[key], allow=defaults.get("allow"),
                                  rate_limit=defaults.get("rate_limit", RateLimit()))
    return Config(path=path, listeners=tuple(listeners), **daemon)


def mesh_problems(mesh: Mesh, listeners: list[Listener],
                  allow: Optional[tuple]) -> list[tuple[str, str]]:
    """(key of mesh:, problem) for each way the mesh contradicts the rest of the file: a
    listener on its group and port (two sockets cannot bind both), an allow list with no
    IPv4 network (no peer would be answered)."""
    problems = []
    for index, listener in enumerate(listeners):
        if (listener.group, listener.port) == (mesh.group, mesh.port):
            where = "the listener" if len(listeners) == 1 else f"{LISTENERS}[{index}]"
            problems.append(("port", f"group {mesh.group} port {mesh.port} is also {where}'s: "
                             "the mesh needs a group and port of its own; use another port "
                             f"(e.g. port: {mesh.port + 1})"))
    if allow is not None and all(network.version != 4 for network in allow):
        problems.append(("group", f"the top-level allow {spell(allow)} holds no IPv4 network, "
                         "so no mesh peer would be answered: add the mesh's network (e.g. "
                         "10.0.0.0/8) or write allow: null"))
    return problems


def _problem_line(problem: str, path: str) -> int:
    """The line a problem names ("PATH:LINE: ..."); 0 for one of the command line's."""
    line = problem[len(path) + 1:].partition(":")[0] if problem.startswith(f"{path}:") else ""
    return int(line) if line.isdigit() else 0


def config_warnings(config: Config) -> list[str]:
    """What check-config (on stderr) and a start (in the log) warn of in a valid config."""
    return reply_warnings(config) + asmping_warnings(config)


def asmping_warnings(config: Config) -> list[str]:
    """An ssmping group asmping cannot ask for: only RFC 6450 clients get replies to it."""
    if config.ssmping is None:
        return []
    odd = [group for group in config.ssmping.groups
           if not asmping_can_ask(ipaddress.ip_address(group))]
    if not odd:
        return []
    return [f"ssmping: groups: {', '.join(odd)}: asmping can ask only for {ASMPING_GROUPS}, "
            "so only RFC 6450 clients (mcast-echo ping --protocol rfc6450) get replies to "
            + ("it" if len(odd) == 1 else "them")]


def reply_warnings(config: Config) -> list[str]:
    """A listener that echoes to the group (reply: group or both) with ttl: 1 (or 0) sends
    those echoes no further than its own link: valid, but rarely what was meant. (A link-local
    group is never routed anyway, so it is not warned of.)"""
    return [f"{listener.where}: reply: {listener.reply} with ttl: {listener.ttl}: its echoes to "
            f"the group do not leave this {'link' if listener.ttl else 'host'} (a router "
            "forwards TTL 2 or more); set ttl: to 1 + the routers between here and the "
            "probers to reach them"
            for listener in config.listeners
            if listener.reply != "unicast" and listener.ttl <= 1
            and not is_never_routed_group(listener.group)]


def describe(config: Config) -> list[str]:
    """The effective settings as check-config prints them, as YAML: the one listener's keys
    at the top, or a `listeners:` block per listener."""
    lines = [f"# effective settings from {config.path}"]
    several = len(config.listeners) > 1
    if several:
        lines.append(f"{LISTENERS}:")
    for listener in config.listeners:
        for number, key in enumerate(LISTENER_KEYS):
            value = getattr(listener, key)
            shown = "off" if key == "rate_limit" and value is None else spell(value)
            indent = ("  - " if number == 0 else "    ") if several else ""
            lines.append(f"{indent}{key}: {shown}")
    for key in DAEMON_KEYS:
        lines.append(f"{key}: {spell(getattr(config, key))}")
    return lines
