"""The configuration file: reading it, and errors that name file, line and fix.

The keys and their checks live in schema.py; this module turns the YAML text
into nodes with line numbers, refuses what a config never needs, and runs the
checks, so every problem is reported as ``file:line: key: ...``.

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
import os
import re
import stat
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Optional

import yaml
from yaml.constructor import SafeConstructor

from .schema import (
    ALL_KEYS,
    DAEMON_KEYS,
    LISTENER_KEYS,
    LISTENERS,
    MAX_LISTENERS,
    Config,
    Invalid,
    Listener,
    RateLimit,
    clip,
    listener_problems,
    show,
    spell,
)

DEFAULT_PATH = "/etc/mcast-echo.yaml"
MAX_FILE_BYTES = 1 << 20  # a config file is a few hundred bytes; refuse anything huge
MAX_DEPTH = 8  # mappings/lists inside each other; the schema needs 4 (listeners: - allow: [])
MAX_INT_DIGITS = 100  # an integer literal longer than this is refused; no setting needs 11
# Explicit tags that only restate a plain type; anything else (!!python/..., !!binary,
# !!set, !!timestamp) is refused: a setting is text, a number, a boolean, null, a list or
# a mapping.
PLAIN_TYPES = ("str", "int", "float", "bool", "null", "seq", "map")
SAFE_TAGS = {None, "!"} | {f"tag:yaml.org,2002:{name}" for name in PLAIN_TYPES}


class ConfigError(Exception):
    """One or more problems, each already a complete line for the operator."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Unreadable(Exception):
    """A YAML node that cannot become a value; *line* is the node's line in the file."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


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
                                       "deep: a config needs four at most"])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            tag = getattr(event, "tag", None)  # None unless the file wrote one
            if tag not in SAFE_TAGS:
                raise ConfigError([f"{path}:{line}: {_key_on_line(text, line)}YAML tags "
                                   f"({clip(tag)}) are not allowed here: write plain values"])
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


class _Constructor(SafeConstructor):
    """Builds only the types a setting can hold, and never raises anything but Unreadable.

    PyYAML's SafeConstructor also builds dates (``2001-02-30`` raises ValueError),
    integers of any length (over 4,300 digits raise ValueError, and long ones take
    quadratic time), binary, sets and merge keys (``<<``). Here a date or any other
    implicitly typed scalar is its text, a long integer is "too large", ``<<`` is an
    ordinary key, and any failure at any depth names the line of the node that failed.
    """

    yaml_constructors: dict = {}  # empty: only the constructors added below exist

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except Unreadable:
            raise
        except Exception as e:  # whatever a constructor raises: a per-key problem, not a crash
            if isinstance(e, yaml.MarkedYAMLError):
                reason = " ".join(part for part in (e.context, e.problem) if part)
            else:
                reason = str(e) or type(e).__name__
            raise Unreadable(node.start_mark.line + 1,
                             f"cannot read this value ({clip(reason)})") from None

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """No merge keys: '<<' is a key like any other (and so an unknown one)."""

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        literal = self.construct_scalar(node)
        if len(literal.replace("_", "").lstrip("+-")) > MAX_INT_DIGITS:
            raise Unreadable(node.start_mark.line + 1,
                             f"{clip(literal)} is too large: no setting takes an integer "
                             "of more than 10 digits")
        if ":" in literal:  # YAML 1.1 base 60 (1:30 is 90): no setting means that, and
            return literal  # an IPv6 address such as 2001:1:2:3:4:5:6:7 must stay text
        return self.construct_yaml_int(node)

    def construct_text(self, node: yaml.Node) -> str:
        """A date, '=' or any other scalar YAML would give a special type: its text."""
        if not isinstance(node, yaml.ScalarNode):
            raise Unreadable(node.start_mark.line + 1, f"a YAML {node.tag} is not a setting: "
                             "write plain values")
        return self.construct_scalar(node)


for _name in PLAIN_TYPES:
    _Constructor.add_constructor(f"tag:yaml.org,2002:{_name}",
                                 SafeConstructor.yaml_constructors[f"tag:yaml.org,2002:{_name}"])
_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_bounded_int)
_Constructor.add_constructor(None, _Constructor.construct_text)  # timestamp, merge, value


def _value(node: yaml.Node) -> Any:
    """The Python value of a node (anchors, aliases and odd tags were refused before).

    Raises Unreadable, with the line of the node at fault, for anything else.
    """
    return _Constructor().construct_object(node, deep=True)


def _shown(node: yaml.Node) -> str:
    """A node as an error line quotes it, even one that cannot be read."""
    try:
        return show(_value(node))
    except Unreadable:
        return show(node.value) if isinstance(node, yaml.ScalarNode) else "a list"


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
            key = _value(key_node) if isinstance(key_node, yaml.ScalarNode) else []
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
        duplicate = _nested_duplicate(value_node)
        if duplicate is not None:
            problems.append(f"{path}:{duplicate[0]}: {prefix}{key}: {show(duplicate[1])}: "
                            f"duplicate key (first set on line {duplicate[2]}); keep one")
            settings.failed.add(key)
            continue
        try:
            settings.values[key] = ALL_KEYS[key](_value(value_node))
            continue
        except Unreadable as e:
            problems.append(f"{path}:{e.line}: {prefix}{key}: {e}")
        except Invalid as e:
            problems.append(f"{path}:{_line_of(value_node, e.at)}: {prefix}{key}: {e}")
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
        problems.append(f"{where} {_shown(node)} is not a list of listeners (allowed: a list "
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
                            f"{_shown(item)} is not a listener (allowed: a mapping of listener "
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


def load_config(path: str = DEFAULT_PATH,
                overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Read and validate *path*; *overrides* (from the command line) win over the file,
    for every listener.

    Without a `listeners:` list, the top-level keys are the one listener; with it, they are
    the defaults of each listener. Raises ConfigError listing every problem found, each as
    ``file:line: key: ...``.
    """
    root = _compose(_read_text(path), path)
    if root is None:
        raise ConfigError([f"{path}: the file holds no settings; start from the shipped "
                           "etc/mcast-echo.yaml (write '{}' for all defaults)"])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([f"{path}:{root.start_mark.line + 1}: the file must be a mapping of "
                           f"'key: value' lines, not {_shown(root)}"])
    problems: list[str] = []
    top = _read_settings(root, path, "", problems)
    items = (_read_listeners(top.nodes[LISTENERS], top.lines[LISTENERS], path, problems)
             if LISTENERS in top.nodes else [None])
    command_line: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        try:
            command_line[key] = ALL_KEYS[key](value)
        except Invalid as e:
            problems.append(f"command line: --{key.replace('_', '-')}: {e}")
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
    if problems:
        raise ConfigError(problems)
    daemon = {k: v for k, v in {**top.values, **command_line}.items() if k in DAEMON_KEYS}
    if daemon.get("ssmping") is not None:  # answered under the top-level allow and rate_limit
        daemon["ssmping"] = replace(daemon["ssmping"], allow=defaults.get("allow"),
                                    rate_limit=defaults.get("rate_limit", RateLimit()))
    return Config(path=path, listeners=tuple(listeners), **daemon)


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
