"""`mcast-echo mesh`: the man page, the README and --help name every option and exit status
alike (as test_ping_docs.py does for ping)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mcast_echo.meshview import command
from test_ping_docs import MAN_SOURCE, README, has_option, man_section, options_of

MESH_MAN = man_section(".TP\n.B mesh\n", ".SH PING OUTPUT")


def readme_mesh_section() -> str:
    text = README.read_text()
    start = text.index("## Who hears whom: `mcast-echo mesh`")
    return text[start:text.index("\n## ", start + 1)]


@pytest.mark.parametrize("option", options_of("mesh"))
def test_every_mesh_option_is_in_the_man_page_the_readme_and_help(option):
    assert has_option(MESH_MAN, option), f"{option} missing from mcast-echo(8) mesh"
    assert has_option(readme_mesh_section(), option), f"{option} missing from the README"
    help_text = subprocess.run([sys.executable, "-m", "mcast_echo", "mesh", "--help"],
                               capture_output=True, text=True, timeout=30).stdout
    assert has_option(help_text, option)


def test_the_exit_statuses_are_the_same_in_help_readme_and_man_page():
    codes = (command.EXIT_OK, command.EXIT_PROBLEM, command.EXIT_ERROR, command.EXIT_USAGE)
    assert codes == (0, 1, 2, 64)
    readme = " ".join(readme_mesh_section().split())
    assert ("Exit status: 0 if every ordered pair is healthy, 1 on a deaf or silent host, a "
            "partition, a dead or lossy path, 2 if an endpoint (or Prometheus) cannot be "
            "read") in readme
    table = MAN_SOURCE[MAN_SOURCE.index(".SH EXIT STATUS"):MAN_SOURCE.index(".SH ENVIRONMENT")]
    assert table.count(".BR mesh :") == 3  # 0, 1 and 2; 64 is every command's
