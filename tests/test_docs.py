"""What the README and `make help` promise matches what the Makefile has (issue 13.14)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def phony_targets() -> set[str]:
    targets: set[str] = set()
    included = re.findall(r"^-?include (\S+)", (ROOT / "Makefile").read_text(), flags=re.M)
    for makefile in [ROOT / "Makefile", *(ROOT / name for name in included)]:
        for line in makefile.read_text().splitlines():
            if line.startswith(".PHONY:"):
                targets.update(line.split(":", 1)[1].split())
    return targets - {"all"}


def test_make_help_lists_every_target():
    shown = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    listed = set(re.findall(r"^make ([a-z-]+)", shown, flags=re.M))
    assert listed == phony_targets(), (listed ^ phony_targets())


def test_readme_quick_start_states_its_prerequisites():
    quick = ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1].split("\n## ")[0]
    for needed in ("python3-venv", "make run", "make test", "package index"):
        assert needed in quick, needed


def test_make_test_runs_the_plain_pass_when_the_first_fails(tmp_path):
    """#20.1: make stopped at the first failing pytest, so the plain-path pass never ran;
    both run now and make fails at the end. (A pytest that always fails stands in, and a
    fresh stamp stands for the venv.)"""
    stamp = tmp_path / "installed"
    stamp.touch()
    done = subprocess.run(["make", "-s", "test", "PY=false", "NETNS=env", f"STAMP={stamp}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "MCAST_ECHO_ECHO_PATH=plain" in done.stdout, done.stdout
    assert "make test: a pass failed" in done.stdout, done.stdout


# ---------------------------------------------------------------- #20.10: docs that match

MAN8 = (ROOT / "packaging/man/mcast-echo.8").read_text()


def test_the_descriptions_say_ipv4_and_ipv6():
    """The man page's DESCRIPTION and the package's Description said IPv4 only."""
    description = MAN8.split(".SH DESCRIPTION", 1)[1].split(".SH ", 1)[0]
    control = (ROOT / "packaging/debian/control").read_text().split("Description:", 1)[1]
    for text in (" ".join(description.split()), " ".join(control.split())):
        assert "IPv4 multicast group" not in text
        assert "IPv4 and IPv6" in text


def test_pings_synopsis_has_every_option():
    from mcast_echo import cli

    synopsis = MAN8.split(".B mcast-echo ping\n", 1)[1].split(".br", 1)[0].replace("\\-", "-")
    parser = cli.build_parser().subcommands["ping"]
    options = {option for action in parser._actions for option in action.option_strings
               if option not in ("-h", "--help", "--version")}
    missing = {option for option in options
               if re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", synopsis) is None}
    assert not missing, missing


def test_dash_q_is_described_the_same_three_ways():
    words = "only the banner and the summary"
    help_text = " ".join(subprocess.run([sys.executable, "-m", "mcast_echo", "ping", "--help"],
                                        capture_output=True, text=True, timeout=30).stdout.split())
    assert f"print {words} (its statistics, notes and hints): no line per echo" in help_text
    man = " ".join(MAN8.split(".B \\-q\n", 1)[1].split(".TP", 1)[0].split())
    assert man == f"Print {words} (its statistics, notes and hints): no line per echo."
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"`-q` ({words}, its statistics, notes and hints: no line per echo)" in readme


def test_deb_deps_installs_every_python_dependency_of_the_package():
    control = (ROOT / "packaging/debian/control").read_text()
    depends = control.split("\nDepends:", 1)[1].split("\nDescription:", 1)[0]
    wanted = set(re.findall(r"\b(python3-[a-z0-9-]+)", depends))
    assert "python3-prometheus-client" in wanted
    deb_mk = (ROOT / "packaging/deb.mk").read_text()
    apt = deb_mk.split("DEB_APT_PACKAGES :=", 1)[1].split("\n\n", 1)[0]
    assert wanted <= set(apt.split()), wanted - set(apt.split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    for package in wanted:
        assert package in readme.split("The package depends on", 1)[1][:300], package


def test_docs_are_installed_by_the_package_and_their_paths_exist():
    rules = (ROOT / "packaging/debian/rules").read_text()
    assert "docs/*.md" in rules
    assert re.search(r"DEB_SOURCES :=[^\n]* docs ", (ROOT / "packaging/deb.mk").read_text())
    for doc in (ROOT / "docs").glob("*.md"):
        for path in re.findall(r"`((?:src|tests|docs)/[\w./-]+)`", doc.read_text()):
            assert (ROOT / path).exists() or (ROOT / path.rstrip("/")).exists(), (doc.name, path)
