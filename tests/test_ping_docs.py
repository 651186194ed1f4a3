"""The man page mcast-echo(8), `--help` and the README agree (issue 13, items 7 and 15).

Options of every subcommand, the exit statuses, ping's markers and its JSON fields are
read from the code (the parser, the exit constants, the documents ping builds) and looked
up in the docs, so a new option or field that is not documented fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcast_echo import cli
from mcast_echo.ping import options as ping_options
from mcast_echo.ping import responderstats, summary, tally
from mcast_echo.ping.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "packaging" / "man" / "mcast-echo.8"
README = ROOT / "README.md"
UNDOCUMENTED = {"-h", "--help", "--version"}  # the man page's OPTIONS name them once
MARKERS = ["(DUP!)", "(TRUNCATED: ", "(CORRUPTED)", "(group)", "(wrong source port)", "(local)",
           "hops=?"]


def roff_text(source: str) -> str:
    """The man page's words: escapes and font changes gone, `\\-` back to `-`."""
    text = re.sub(r"\\f[BIRP]", "", source).replace("\\-", "-").replace("\\e", "\\")
    return re.sub(r'^\.(?:B|I|BR|BI|IR|RB|RI|IB)\s+', "", text, flags=re.M).replace('"', "")


MAN_SOURCE = MAN.read_text()
MAN_TEXT = roff_text(MAN_SOURCE)


def man_section(start: str, end: str) -> str:
    return roff_text(MAN_SOURCE[MAN_SOURCE.index(start):MAN_SOURCE.index(end)])


def readme_ping_section() -> str:
    text = README.read_text()
    start = text.index("## `mcast-echo ping`")
    return text[start:text.index("\n## ", start + 1)]


def has_option(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def options_of(command: str) -> list[str]:
    parser = cli.build_parser().subcommands[command]
    return [option for action in parser._actions if action.help != "==SUPPRESS=="
            for option in action.option_strings if option not in UNDOCUMENTED]


PING_MAN = man_section(".TP\n.B ping\n", ".TP\n.B mesh\n")  # mesh follows ping
README_PING = readme_ping_section()


@pytest.mark.parametrize("option", options_of("ping"))
def test_every_ping_option_is_in_the_man_page_the_readme_and_help(option):
    assert has_option(PING_MAN, option), f"{option} missing from mcast-echo(8) ping"
    assert has_option(README_PING, option), f"{option} missing from the README's ping section"
    help_text = subprocess.run([sys.executable, "-m", "mcast_echo", "ping", "--help"],
                               capture_output=True, text=True, timeout=30).stdout
    assert has_option(help_text, option)


def test_the_man_pages_ping_options_all_exist():
    """Both ways: no option in the man page that the parser does not have."""
    entries = re.findall(r"^\.TP\n(-[\w-]+(?: *, *-[\w-]+)*)", PING_MAN, re.M)
    documented = {option.strip() for entry in entries for option in entry.split(",")}
    assert documented == set(options_of("ping")), documented ^ set(options_of("ping"))


@pytest.mark.parametrize("command", ["serve", "check-config", "limits"])
def test_every_daemon_option_is_in_the_man_page(command):
    for option in options_of(command):
        assert has_option(man_section(".SH OPTIONS", ".SH SIGNALS"), option), option


def exit_statuses() -> set[int]:
    ping_codes = {ping_options.EXIT_OK, ping_options.EXIT_FEWER, ping_options.EXIT_ERROR,
                  ping_options.EXIT_USAGE}
    return ping_codes | {cli.EX_OK, cli.EX_USAGE, cli.EX_UNAVAILABLE, cli.EX_SOFTWARE,
                         cli.EX_CONFIG}


def test_one_exit_status_table_in_the_man_page_for_every_command():
    table = MAN_SOURCE[MAN_SOURCE.index(".SH EXIT STATUS"):MAN_SOURCE.index(".SH ENVIRONMENT")]
    assert MAN_SOURCE.count(".SH EXIT STATUS") == 1
    assert {int(code) for code in re.findall(r"^\.TP\n\.B (\d+)$", table, re.M)} == (
        exit_statuses())
    assert cli.EX_USAGE == ping_options.EXIT_USAGE == 64  # argument errors: one code for all
    assert "for every command" in roff_text(table)


def test_pings_help_and_readme_give_its_exit_statuses():
    help_text = " ".join(subprocess.run(
        [sys.executable, "-m", "mcast_echo", "ping", "--help"], capture_output=True, text=True,
        timeout=30).stdout.split())
    counted = ("counted (intact echoes from other hosts than this one, and by the group when "
               "they echo there")
    assert (f"Exit status: 0 if at least N (--expect) responders {counted}), 1 if "
            "fewer, 2 on a network, config-file or output error, 64 on bad options") in help_text
    readme = " ".join(README_PING.split())
    assert (f"Exit status: 0 if at least N responders (`--expect N`, default 1) {counted}; "
            "from the group's port), 1 if fewer, 2 on a network error") in readme
    assert "64 on bad options (every subcommand" in readme


@pytest.mark.parametrize("marker", MARKERS)
def test_markers_are_described_in_both(marker):
    assert marker in MAN_TEXT, marker
    assert marker in README_PING, marker


def json_fields() -> list[str]:
    settings = Settings(group="224.3.29.71", port=9999, interface=None, source=None, count=1,
                        interval=1.0, size=192, ttl=1, loopback=True, wait=1.0, deadline=None,
                        expect=1, quiet=False, json=True, numeric=True, timestamps=False,
                        config=None)
    table = tally.ResponderTable(9999)
    document = summary.json_document(settings, 1, table, tally.RunCounts(), 1.0, "lo",
                                     True, [], [])
    responder = responderstats.ResponderStats("10.0.0.2", 9999).to_json(1)
    return sorted({*document, *document["settings"], *responder})


@pytest.mark.parametrize("field", json_fields())
def test_json_fields_are_described_in_both(field):
    man_json = man_section(".SS JSON", ".SH OPTIONS")
    assert has_option(man_json, field), f"{field} missing from mcast-echo(8) JSON"
    assert has_option(README_PING, field), f"{field} missing from the README's ping section"
