"""promtool, as the rule files' tests run it (Debian's prometheus package has it)."""

import shutil
import subprocess
from pathlib import Path

import pytest

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool is not installed (Debian: prometheus)")


def check_rules(path: Path) -> subprocess.CompletedProcess:
    """`promtool check rules PATH`: the file parses and its expressions are valid."""
    return subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)


def run_rule_tests(tests: Path) -> subprocess.CompletedProcess:
    """`promtool test rules TESTS`, run beside the file (its rule_files are relative)."""
    return subprocess.run(["promtool", "test", "rules", tests.name], cwd=tests.parent,
                          capture_output=True, text=True, timeout=120)

