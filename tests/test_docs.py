"""What the README and `make help` promise matches what the Makefile has (issue 13.14)."""

from __future__ import annotations

import re
import subprocess
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
