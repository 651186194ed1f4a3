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
    assert lines == [f"PROBE_TARGET={target}", "PROBE_COUNT=5", "PROBE_EXPECT=1", "PROBE_SPREAD=0",
                     f"PROBE_OPTIONS={options}"]


# --- #20.11: every config key has a variable, node_exporter, the .deb path


@pytest.mark.parametrize("key", ["ssmping", "mesh"])
def test_the_ssmping_listener_and_the_mesh_have_a_variable_rendered_into_the_checked_config(
        key):
    defaults = load(ROLE / "defaults" / "main.yml")
    assert f"mcast_echo_{key}" in defaults and defaults[f"mcast_echo_{key}"] is None
    specs = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert specs[f"mcast_echo_{key}"]["type"] == "dict"
    template = (ROLE / "templates" / "mcast-echo.yaml.j2").read_text()
    # as JSON, like every value: a mapping cannot add lines; check-config validates it
    assert f"\n{key}: {{{{ value(mcast_echo_{key}) }}}}\n" in template
    [write] = [t for t in load(ROLE / "tasks" / "main.yml")
               if t.get("ansible.builtin.template", {}).get("src") == "mcast-echo.yaml.j2"]
    assert write["ansible.builtin.template"]["validate"] == "mcast-echo check-config -c %s"


def test_every_top_level_config_key_has_a_variable():
    from mcast_echo import schema
    template = (ROLE / "templates" / "mcast-echo.yaml.j2").read_text()
    written = set(re.findall(r"^(\w+):", template, re.M))
    assert set(schema.ALL_KEYS) | {schema.LISTENERS} <= written, \
        sorted(set(schema.ALL_KEYS) - written)


def test_node_exporter_is_optional_and_off_by_default():
    assert load(ROLE / "defaults" / "main.yml")["mcast_echo_node_exporter"] is False
    tasks = load(ROLE / "tasks" / "probe.yml")
    [block] = [t for t in tasks if "block" in t]
    assert block["when"] == "mcast_echo_node_exporter | bool"
    names = [task.get("ansible.builtin.apt", {}).get("name") for task in block["block"]]
    assert "prometheus-node-exporter" in names
    readme = (ROLE / "README.md").read_text()
    assert "mcast_echo_node_exporter" in readme and "textfile collector" in readme


def deb_file() -> str:
    """The path `make deb` writes, relative to the repository (packaging/deb.mk)."""
    version = re.search(r'^version = "(.*)"', (ROOT / "pyproject.toml").read_text(),
                        re.M).group(1)
    assert "DEB_FILE := $(DEB_OUT)/mcast-echo_$(DEB_VERSION)_all.deb" in (
        ROOT / "packaging" / "deb.mk").read_text()
    return f"build/deb/mcast-echo_{version}_all.deb"


@pytest.mark.parametrize("document", ["README.md", "packaging/ansible/inventory.example.yml",
                                      "packaging/ansible/roles/mcast_echo/README.md"])
def test_the_documented_deb_path_is_the_one_make_deb_writes(document):
    """Relative to the playbook's directory (packaging/ansible/), where Ansible looks."""
    playbook_dir = ROOT / "packaging" / "ansible"
    text = (ROOT / document).read_text()
    found = re.findall(r'mcast_echo_deb: "?((?:\{\{ playbook_dir \}\})?[^"\s]+\.deb)', text)
    found += re.findall(r'`"(\{\{ playbook_dir \}\}[^"`]+\.deb)"`', text)
    assert found, document
    for path in found:
        path = path.replace("{{ playbook_dir }}", str(playbook_dir))
        resolved = (playbook_dir / path).resolve()
        assert resolved == (ROOT / deb_file()).resolve(), (document, path)


def test_every_setting_of_the_probe_unit_has_a_role_variable():
    """The probe unit's Environment= defaults (PROBE_COUNT, PROBE_EXPECT, PROBE_SPREAD ...) are
    each written by the role's template, so none is out of the role's reach (#19.3's
    --spread among them), and each written count has a default."""
    unit = (ROOT / "systemd" / "mcast-echo-probe.service").read_text()
    [environment] = re.findall(r"^Environment=(.*)$", unit, re.M)
    settings = {item.split("=")[0] for item in environment.split()}
    template = PROBE_TEMPLATE.read_text()
    written = set(re.findall(r"^(PROBE_\w+)=", template, re.M))
    assert settings <= written, settings - written
    rendered = render_probe_defaults()
    assert "PROBE_SPREAD=0\n" in rendered
    assert "PROBE_SPREAD=200\n" in render_probe_defaults(mcast_echo_probe_spread="200")
