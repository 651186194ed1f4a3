"""Reading a YAML config file safely: text, then nodes with line numbers, then values.

config.py asks this module for the file's text (read_text, which says why a file
cannot be opened in the words of the command asking: FileAdvice), its node tree and
the value of each node; everything a config never needs is refused here, before
anything could expand or build it: anchors and aliases (a "billion laughs"), a second
document, tags other than the plain types, nesting deeper than MAX_DEPTH, huge files
and integers, binary and non-UTF-8 text. Every refusal is a ConfigError line that
names the file, and the line where there is one.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Optional

import yaml
from yaml.constructor import SafeConstructor

from .schema.values import Quoted, clip, show

# The largest config: MAX_LISTENERS (4,096) listeners of up to 1 KiB each (an 'allow' list,
# SSM 'sources', comments); it parses in seconds, off the echo loop. Past it: not a config.
MAX_FILE_BYTES = 4 << 20
# libyaml's parser where there is one (python3-yaml has it): ~5x faster on a large file. A
# file it refuses is parsed again by PyYAML's own, whose error messages are the ones we show.
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 8  # mappings/lists inside each other; the schema needs 4 (listeners: - allow: [])
MAX_INT_DIGITS = 100  # an integer literal longer than this is refused; no setting needs 11
# Explicit tags that only restate a plain type; anything else (!!python/..., !!binary,
# !!set, !!timestamp) is refused: a setting is text, a number, a boolean, null, a list or
# a mapping.
PLAIN_TYPES = ("str", "int", "float", "bool", "null", "seq", "map")
SAFE_TAGS = {None, "!"} | {f"tag:yaml.org,2002:{name}" for name in PLAIN_TYPES}
_STR = "tag:yaml.org,2002:str"
_PLAIN_RESOLVER = yaml.resolver.Resolver()  # the type a scalar would have without quotes


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


# ----------------------------------------------------------------- the file's text


@dataclass(frozen=True)
class FileAdvice:
    """What a command tells the operator when it cannot read the config file: each is the
    text after "PATH: ". The daemon's names -c and the daemon's user; ping's --config and
    the user running it. read_text picks one by what the open found (ENOENT, EISDIR, a
    file that is not regular, EACCES or EPERM); any other error is "cannot read: ..."."""

    missing: str
    directory: str
    not_regular: str  # a FIFO, socket or device
    unreadable: str  # permission denied


DAEMON_ADVICE = FileAdvice(  # serve, check-config, limits and a reload
    missing="no such file (copy etc/mcast-echo.yaml there, or pass -c PATH)",
    directory="is a directory, not a config file (pass -c PATH to a YAML file)",
    not_regular="not a regular file (a FIFO, socket or device): point -c at a YAML file",
    unreadable="permission denied (the daemon's user must be able to read it: chmod 644 the "
               "file and let it reach the directory)")
PING_ADVICE = FileAdvice(  # mcast-echo ping --config PATH
    missing="no such file (pass --config PATH, or name the group: mcast-echo ping "
            "GROUP[:PORT])",
    directory="is a directory (pass --config PATH to a YAML file)",
    not_regular="not a regular file (a FIFO, socket or device): pass --config PATH to a YAML "
                "file",
    unreadable="permission denied: ping reads it as you (make it readable, pass --config PATH "
               "to a copy, or name the group: mcast-echo ping GROUP)")


def read_text(path: str, advice: FileAdvice = DAEMON_ADVICE) -> str:
    """The file's text; ConfigError if it cannot be read (in *advice*'s words), is huge,
    binary or not UTF-8."""
    where = f"{path}"
    try:
        # O_NONBLOCK: a FIFO (or device) must not hang check-config or a reload.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                raise ConfigError([f"{where}: {advice.not_regular}"])
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{where}: {advice.missing}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{where}: {advice.directory}"]) from None
    except PermissionError:
        raise ConfigError([f"{where}: {advice.unreadable}"]) from None
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


# ----------------------------------------------------------------- text to nodes


def compose(text: str, path: str) -> Optional[yaml.Node]:
    """Parse to a node tree with line numbers, refusing what a config never needs."""
    try:
        return _compose(text, path, FAST_LOADER)
    except yaml.YAMLError:
        return _compose(text, path, yaml.SafeLoader)


def _compose(text: str, path: str, loader: Any) -> Optional[yaml.Node]:
    try:
        # Events first: refuse anchors/aliases before anything could expand them
        # ("billion laughs"), and more than one document.
        documents = depth = 0
        for event in yaml.parse(text, Loader=loader):
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
        return yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as e:
        if loader is not yaml.SafeLoader:
            raise
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        what = " ".join(part for part in (e.context, e.problem) if part)
        raise ConfigError([f"{where}: YAML syntax error: {what}"]) from None
    except yaml.YAMLError as e:
        if loader is not yaml.SafeLoader:
            raise
        raise ConfigError([f"{path}: YAML error: {e}"]) from None


_KEY_AT_START = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


def _key_on_line(text: str, line: int) -> str:
    """'port: ' when line *line* of *text* starts with that key, else ''."""
    lines = text.splitlines()
    match = _KEY_AT_START.match(lines[line - 1]) if 0 < line <= len(lines) else None
    return f"{match.group(1)}: " if match else ""


def nested_duplicate(node: yaml.Node) -> Optional[tuple[int, str, int]]:
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


# ----------------------------------------------------------------- nodes to values


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

    def construct_string(self, node: yaml.ScalarNode) -> str:
        """A string; Quoted (which remembers the plain value) if it would be another type
        without its quotes or its !!str tag, so that `port: "9999"` can be told apart."""
        text = self.construct_scalar(node)
        if node.style in ("|", ">"):  # a block of text: no one writes a number that way
            return text
        tag = _PLAIN_RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
        if tag == _STR:
            return text
        try:
            plain = self.construct_object(yaml.ScalarNode(tag, text, node.start_mark,
                                                          node.end_mark))
        except Unreadable:  # too large unquoted: plain text it is
            return text
        return text if isinstance(plain, str) else Quoted(text, plain)

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
_Constructor.add_constructor(_STR, _Constructor.construct_string)
_Constructor.add_constructor(None, _Constructor.construct_text)  # timestamp, merge, value


def node_value(node: yaml.Node) -> Any:
    """The Python value of a node (anchors, aliases and odd tags were refused before).

    Raises Unreadable, with the line of the node at fault, for anything else.
    """
    return _Constructor().construct_object(node, deep=True)


def node_shown(node: yaml.Node) -> str:
    """A node as an error line quotes it, even one that cannot be read."""
    try:
        return show(node_value(node))
    except Unreadable:
        return show(node.value) if isinstance(node, yaml.ScalarNode) else "a list"
