"""What every key's check is built of: the problem it raises, how it quotes a value back,
and the checks of plain values (integers, booleans, ports, sizes, mappings of keys).

A check takes a YAML value and returns the typed value or raises Invalid with the text
that follows "key: " in an error line; the bad value is always quoted back (show). The
checks of each concern are built from these: listener.py, policy.py, endpoints.py,
keys.py. Nothing here touches a file or the network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

MAX_SHOWN = 60  # characters of a bad value quoted back in a message


class Invalid(ValueError):
    """A value failed its check; the message says what is allowed.

    *at* points inside a list (an index) or a mapping (a key), so the error
    names the line of that item rather than of the key that holds it.
    """

    def __init__(self, message: str, at: Any = None) -> None:
        super().__init__(message)
        self.at = at

    def each(self) -> list[Invalid]:
        """Every problem this stands for, each with its own *at*."""
        return [self]


class Problems(Invalid):
    """Several problems in one value (items of a list, keys of a mapping): each is
    reported on its own line."""

    def __init__(self, problems: list[Invalid]) -> None:
        super().__init__("; ".join(str(problem) for problem in problems), problems[0].at)
        self.problems = problems

    def each(self) -> list[Invalid]:
        return self.problems


def raise_any(problems: list[Invalid]) -> None:
    """Raise the problems found in a value, if any: one as itself, several as Problems."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise Problems(problems)


def _within(place: Any, problem: Invalid, prefix: str = "") -> list[Invalid]:
    """*problem*'s lines, moved inside *place* (a key or index of the value that holds
    it): each points at place, or at its own place within it, and starts with *prefix*."""
    return [Invalid(f"{prefix}{one}", place if one.at is None else
                    (place, *one.at) if isinstance(one.at, tuple) else (place, one.at))
            for one in problem.each()]


def each_item(items: list, check: Callable[[Any], Any]) -> list:
    """check(item) of every item of a list; every bad one is a problem of its own,
    pointing at its item."""
    values, problems = [], []
    for index, item in enumerate(items):
        try:
            values.append(check(item))
        except Invalid as e:
            problems.extend(_within(index, e))
    raise_any(problems)
    return values


class Quoted(str):
    """Text the file wrote in quotes (port: "9999"), or tagged !!str, that would be a
    number, a boolean or null without them; *plain* is that value (9999). It is a string
    like any other, so a key that takes text takes it; a key that does not says why."""

    plain: Any

    def __new__(cls, text: str, plain: Any) -> Quoted:
        quoted = super().__new__(cls, text)
        quoted.plain = plain
        return quoted


def checked(key: str, check: Callable[[Any], Any], value: Any) -> Any:
    """check(value), the value of *key*. A quoted value that fails is said to be a
    string, with how to write it: `"9999" is a string; write port: 9999`."""
    try:
        return check(value)
    except Invalid as problem:
        if not isinstance(value, Quoted):
            raise
        quoted = f'"{clip(value)}" is a string'
        try:
            check(value.plain)
        except Invalid as unquoted:
            raise Invalid(f"{quoted}; unquoted, {unquoted}", problem.at) from None
        raise Invalid(f"{quoted}; write {key}: {value}", problem.at) from None


# ----------------------------------------------------------------- quoting a value back


class Spelled:
    """A settings object that a mapping key builds (rate_limit, metrics, ssmping): it
    says how the file would write it, for spell."""

    def spelled(self) -> str:
        raise NotImplementedError


def clip(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + f"... ({len(text)} characters)"


def show(value: Any) -> str:
    """A value as an error line quotes it: YAML spelling, clipped to MAX_SHOWN."""
    return clip(spell(value))


def spell(value: Any) -> str:
    """A value in YAML spelling, whole (as check-config prints the settings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, tuple):  # allow: networks
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, Spelled):
        return value.spelled()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # status_interval: 5, not 5.0
    if isinstance(value, Quoted):  # text that unquoted would be a number, boolean or null
        return f'"{value}"'
    if isinstance(value, str) and not value.isprintable():
        return repr(value)  # a newline, tab or escape in a value must not break the line
    return str(value)


# ----------------------------------------------------------------- plain values


def integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{show(value)} is not an integer (allowed: {low}..{high})")
    if not low <= value <= high:
        raise Invalid(f"{show(value)} is out of range {low}..{high}")
    return value


def address(value: Any) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address, None]:
    """An address from its text (of either family), else None."""
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def check_port(value: Any) -> int:
    return integer(value, 1, 65535)


def check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{show(value)} is not a boolean (allowed: true or false)")
    return value


_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1 << 20, "mib": 1 << 20,
          "mb": 1000 ** 2, "g": 1 << 30, "gib": 1 << 30, "gb": 1000 ** 3}
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
MAX_BUFFER = (1 << 31) - 1  # the kernel takes an int


def parse_size(value: Any) -> int:
    """Bytes from ``65536`` or a string such as ``"4MiB"``, ``"512 KiB"``, ``"1M"``."""
    if isinstance(value, bool):
        raise Invalid(f"{show(value)} is not a size (allowed: bytes such as 4194304, or 4MiB)")
    if isinstance(value, int):
        number = value
    else:
        match = _SIZE.match(value) if isinstance(value, str) else None
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            raise Invalid(f"{show(value)} is not a size (allowed: bytes such as 4194304, or a "
                          "number with KiB, MiB, GiB, KB, MB, GB)")
        number = int(match.group(1)) * _UNITS[unit]
    if not 1024 <= number <= MAX_BUFFER:
        raise Invalid(f"{show(value)} is out of range 1KiB..2GiB (1024..{MAX_BUFFER} bytes)")
    return number


@dataclass(frozen=True)
class MappingCheck:
    """The check of a key whose value is a mapping of keys of its own (rate_limit,
    metrics, ssmping): None if the value is *off* (null, or false for rate_limit); else
    build(**values) of the checked values of the keys it sets, which must be keys of
    *checks*. *allowed* is what the value may be, as "... is not {allowed}" says it.
    Every unknown key and every bad value is a problem of its own, naming the key and
    pointing at it."""

    build: Callable[..., Any]
    checks: dict[str, Callable[[Any], Any]]
    allowed: str
    off: Any = None

    def __call__(self, value: Any) -> Optional[Any]:
        if value is self.off:
            return None
        if not isinstance(value, dict):
            raise Invalid(f"{show(value)} is not {self.allowed}")
        values, problems = {}, []
        for key, item in value.items():
            if key not in self.checks:
                problems.append(Invalid(f"{show(key)}: unknown key (allowed: "
                                        f"{', '.join(self.checks)})", at=key))
                continue
            try:
                values[key] = checked(key, self.checks[key], item)
            except Invalid as e:
                problems.extend(_within(key, e, prefix=f"{key}: "))
        raise_any(problems)
        return self.build(**values)
