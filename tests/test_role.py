"""The Ansible role (packaging/ansible/roles/mcast_echo) without Ansible: its tasks, templates
and variables read as files. The test venv has neither Ansible nor Jinja; `make fleet-test`
runs the role for real. Ansible's `match` test is `re.match`, so the role's assert is
evaluated here with `re.match` on the same patterns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "packaging" / "ansible" / "roles" / "mcast_echo"
PROBE_TEMPLATE = ROLE / "templates" / "mcast-echo-probe.default.j2"


def load(path: Path):
    return yaml.safe_load(path.read_text())


def role_vars() -> dict:
    return {**load(ROLE / "defaults" / "main.yml"), **load(ROLE / "vars" / "main.yml")}


def probe_assert() -> dict:
    """The `that:` of the assert before the probe defaults are written: var -> pattern."""
    tasks = load(ROLE / "tasks" / "probe.yml")
    asserts = [t for t in tasks if "ansible.builtin.assert" in t]
    template = [i for i, t in enumerate(tasks) if "ansible.builtin.template" in t]
    assert asserts and tasks.index(asserts[0]) < template[0], "assert first, then write"
    checks = {}
    for condition in asserts[0]["ansible.builtin.assert"]["that"]:
        found = re.fullmatch(r"(\w+) is match\((\w+)\)", condition)
        if found:
            checks[found.group(1)] = role_vars()[found.group(2)]
    return checks


def probe_values_pass(**values: str) -> bool:
    settings = {**role_vars(), **values}
    return all(re.match(pattern, settings[name]) for name, pattern in probe_assert().items())


def render_probe_defaults(**values: str) -> str:
    """The template's {{ var }} and {{ var | int }}, as Jinja fills them (enough for it)."""
    settings = {**role_vars(), **values, "ansible_managed": "Ansible managed"}

    def fill(found: re.Match) -> str:
        value = settings[found.group(1)]
        return str(int(value)) if found.group(2) else str(value)

    return re.sub(r"\{\{ (\w+)( \| int)? \}\}", fill, PROBE_TEMPLATE.read_text())


def test_every_string_the_probe_template_writes_is_checked_first():
    written = set(re.findall(r"\{\{ (\w+) \}\}", PROBE_TEMPLATE.read_text())) - {"ansible_managed"}
    assert written == set(probe_assert()) == {"mcast_echo_probe_target",
                                              "mcast_echo_probe_options"}


@pytest.mark.parametrize("name", ["mcast_echo_probe_target", "mcast_echo_probe_options"])
@pytest.mark.parametrize("value", [
    "239.1.1.1\nPROBE_OPTIONS=--prometheus-textfile /etc/shadow",
    "239.1.1.1\n",  # `$` would let a final newline through: the patterns end in \Z
    "239.1.1.1\rX=1",
    '"239.1.1.1"',
    "'-I eth0'",
    "-I eth0 \\",
    "-I $HOME",
    "-I eth0;reboot",
])
def test_a_value_that_could_inject_a_line_or_quote_is_refused(name, value):
    assert not probe_values_pass(**{name: value})


@pytest.mark.parametrize("target, options", [
    ("", ""),  # the defaults
    ("239.1.1.1:5000", "-I eth0 -t 4"),
    ("[ff15::1]:5000", "-i 0.2 -W 2"),
    ("[ff02::1%eth0]:9999", "-S 10.0.0.1 --expect 2"),
    ("232.1.1.1", "-I 10.0.0.1 -s 200"),
])
def test_ordinary_values_pass_and_render_one_line_each(target, options):
    assert probe_values_pass(mcast_echo_probe_target=target, mcast_echo_probe_options=options)
    lines = [line for line in render_probe_defaults(
        mcast_echo_probe_target=target, mcast_echo_probe_options=options).splitlines()
        if not line.startswith("#")]
    assert lines == [f"PROBE_TARGET={target}", "PROBE_COUNT=5", "PROBE_EXPECT=1",
                     f"PROBE_OPTIONS={options}"]
