"""Bad configs through the front doors: `check-config`, `serve`, and SIGHUP to a running daemon.

tests/test_config.py and tests/test_listeners_config.py hold the exact wording of each
message; here each case of the issue-5 list (wrong types, out of range, non-multicast groups,
unknown and duplicate keys, YAML bombs, binary, empty, a directory, no permission,
allow/rate_limit), and of issue 9's (listeners, IPv6 and SSM groups), must give exactly
one line naming file (and line, where the problem has one), exit 78 from both commands,
quickly and in bounded memory -- and, sent to a running daemon with SIGHUP, leave the old
config serving.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pytest

from clients import echo, sender
from daemonproc import DaemonProcess
from loadlab import AsUser, can_become_another_user
from netlab import Host, unplug, veth
from yardstick import allowance

EX_CONFIG = 78
NOBODY = 65534
MEMORY_LIMIT = 512 << 20  # address space for one CLI run: a YAML bomb must not need more
MAX_MESSAGE = 400  # characters after the path: one line an operator reads
# Seconds before one CLI run is taken for hung: a guard, not a figure (four run at once, and
# on two busy cores a 300 kB file took 5 s); how fast a bomb is refused is asserted alone.
TIME_LIMIT = 60.0


@dataclass(frozen=True)
class Case:
    name: str
    content: Union[str, bytes, None]  # None: a special file (see `special`)
    line: Optional[int]  # the line the message must name; None: a whole-file problem
    says: str  # a fragment the message must contain (the key, or what is wrong)
    special: str = ""  # "directory", "missing", "unreadable", "fifo", "loop"


BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]"
       for i in range(8)]) + "\n"

CASES = [
    # wrong types
    Case("port-quoted-string", 'port: "9999"\n', 1, 'port: "9999" is a string; write port: 9999'),
    Case("port-float", "group: 224.1.1.1\nport: 9999.0\n", 2, "port:"),
    Case("port-date", "port: 2001-01-01\n", 1, "port:"),
    Case("port-binary-tag", "port: !!binary AAAA\n", 1, "port:"),
    Case("ttl-string", 'ttl: "1"\n', 1, 'ttl: "1" is a string; write ttl: 1'),
    Case("loopback-string", 'loopback: "yes"\n', 1, 'loopback: "yes" is a string'),
    Case("loopback-quoted-true", 'loopback: "true"\n', 1,
         'loopback: "true" is a string; write loopback: true'),
    Case("loopback-int", "loopback: 0\n", 1, "loopback:"),
    Case("recv_buffer-list", "recv_buffer: [1]\n", 1, "recv_buffer:"),
    Case("send_buffer-mapping", "\nsend_buffer: {a: 1}\n", 2, "send_buffer:"),
    Case("max_datagram-float", "max_datagram: 1.0e+3\n", 1, "max_datagram:"),
    Case("interface-list", "interface: [eth0]\n", 1, "interface:"),
    Case("interface-bool", "interface: true\n", 1, "interface:"),
    Case("log_level-int", "log_level: 3\n", 1, "log_level:"),
    Case("status_interval-word", "status_interval: fast\n", 1, "status_interval:"),
    Case("group-int", "group: 3758096385\n", 1, "group:"),
    Case("group-five-octets", "group: 224.1.2.3.4\n", 1, "group:"),
    # out of range
    Case("port-negative", "port: -1\n", 1, "port:"),
    Case("port-65536", "# comment\nport: 65536\n", 2, "port:"),
    Case("ttl-1000", "ttl: 1000\n", 1, "ttl:"),
    Case("max_datagram-70000", "max_datagram: 70000\n", 1, "max_datagram:"),
    Case("recv_buffer-1-byte", "recv_buffer: 1\n", 1, "recv_buffer:"),
    Case("send_buffer-3GiB", "send_buffer: 3GiB\n", 1, "send_buffer:"),
    Case("status_interval-a-day", "status_interval: 86400\n", 1, "status_interval:"),
    # not a multicast group
    Case("group-unicast", "port: 9999\ngroup: 192.168.1.1\n", 2, "not a multicast"),
    Case("group-class-e", "group: 240.0.0.1\n", 1, "not a multicast"),
    Case("group-broadcast", "group: 255.255.255.255\n", 1, "not a multicast"),
    Case("group-any", "group: 0.0.0.0\n", 1, "not a multicast"),
    # unknown and duplicate keys
    Case("unknown-typo", "gruop: 224.1.1.1\n", 1, "did you mean 'group'"),
    Case("unknown-capitalised", "Port: 9999\n", 1, "Port: unknown key"),
    Case("duplicate-group", "group: 224.1.1.1\nport: 1\n\n\ngroup: 224.1.1.2\n", 5,
         "duplicate key"),
    Case("duplicate-in-rate_limit", "rate_limit:\n  rate: 10\n  rate: 20\n", 3, "duplicate"),
    Case("key-is-null", "? \n: 1\n", 1, "key"),
    # YAML structure
    Case("billion-laughs", BILLION_LAUGHS, 1, "anchors and aliases"),
    Case("merge-key-alias", "base: &b {port: 1}\n<<: *b\n", 1, "anchors and aliases"),
    Case("undefined-alias", "port: *nowhere\n", 1, "anchors and aliases"),
    Case("two-documents", "port: 1\n---\nport: 2\n", 2, "second YAML document"),
    Case("tab-indent", "rate_limit:\n\trate: 10\n", 2, "YAML syntax error"),
    Case("unclosed-quote", 'port: 1\ngroup: "224.1.1.1\n', 3, "YAML syntax error"),
    Case("python-tag", 'port: !!python/object/apply:os.system ["true"]\n', 1, "port: YAML tags"),
    Case("key-python-tag", "? !!python/name:os.system\n: 1\n", 1, "YAML tags"),
    Case("long-value", "port: " + "9" * 300_000 + "x\n", 1, "port:"),
    Case("deep-nesting", "port: " + "[" * 5000 + "]" * 5000 + "\n", 1, "nest"),
    Case("a-list", "- port: 1\n- ttl: 2\n", 1, "must be a mapping"),
    Case("a-scalar", "224.3.29.71\n", 1, "must be a mapping"),
    # not a YAML text file
    Case("binary", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, 1, "binary"),
    Case("latin-1", "interface: caf\xe9\n".encode("latin-1"), 1, "UTF-8"),
    Case("utf-16", "port: 9999\n".encode("utf-16"), 1, "binary"),
    Case("huge", "# padding\n" * 450_000, None, "larger than"),  # past 4 MiB
    Case("empty", "", None, "holds no settings"),
    Case("only-comments", "# nothing here\n\n   \n", None, "holds no settings"),
    Case("directory", None, None, "is a directory", special="directory"),
    Case("missing", None, None, "no such file", special="missing"),
    Case("no-permission", "port: 9999\n", None, "permission denied", special="unreadable"),
    Case("symlink-loop", None, None, "", special="loop"),
    Case("fifo", None, None, "", special="fifo"),
    # allow and rate_limit
    Case("allow-string", "allow: 10.0.0.1\n", 1, "allow:"),
    Case("allow-bad-item", "allow:\n  - 10.0.0.0/8\n  - 10.0.0.0/8/8\n", 3, "allow:"),
    Case("allow-hostname", "allow: [localhost]\n", 1, "allow:"),
    Case("allow-mapping-item", "allow: [{net: 10.0.0.0/8}]\n", 1, "allow:"),
    Case("allow-empty", "allow: []\n", 1, "allow: [] (an empty list) would answer no source"),
    Case("allow-host-bits", "allow: [10.0.0.1/8]\n", 1, "write 10.0.0.0/8 for the network, or "
         "10.0.0.1/32 for the one address"),
    Case("allow-host-bits-ipv6", "allow:\n  - '2001:db8::1/32'\n", 2, "write 2001:db8::/32 for "
         "the network, or 2001:db8::1/128 for the one address"),
    Case("rate_limit-int", "rate_limit: 1000\n", 1, "rate_limit:"),
    Case("rate_limit-quoted-off", 'rate_limit: "off"\n', 1,
         'rate_limit: "off" is a string; write rate_limit: off'),
    Case("rate_limit-quoted-rate", 'rate_limit:\n  rate: "10"\n', 2,
         'rate_limit: rate: "10" is a string; write rate: 10'),
    Case("rate_limit-negative-rate", "rate_limit: {rate: -5}\n", 1, "rate:"),
    Case("rate_limit-nan", "rate_limit: {rate: .nan}\n", 1, "rate:"),
    Case("rate_limit-burst-0", "rate_limit:\n  burst: 0\n", 2, "burst:"),
    Case("rate_limit-unknown", "rate_limit: {rate: 1, burst: 2, window: 3}\n", 1, "window"),
    # every value the YAML loader can produce (issue 12, item 6): no traceback, ever
    Case("key-invalid-date", "port: 9999\n2001-02-30: 1\n", 2, "2001-02-30: unknown key"),
    Case("document-invalid-date", "2001-02-30\n", 1, "must be a mapping"),
    Case("document-huge-int", "9" * 4301 + "\n", 1, "must be a mapping"),
    Case("key-huge-int", "port: 9999\n? " + "9" * 5000 + "\n: 1\n", 2, "too large"),
    Case("port-huge-int", "port: " + "9" * 5000 + "\n", 1, "port: "),
    Case("port-huge-hex", "port: 0x" + "f" * 300_000 + "\n", 1, "port: "),
    Case("burst-huge-sexagesimal", "rate_limit: {burst: " + "9" * 5000 + ":30}\n", 1, "too large"),
    Case("port-invalid-date", "port: 2001-02-30\n", 1, "port: "),
    Case("port-nan", "port: .nan\n", 1, "port: "),
    Case("port-inf", "port: .inf\n", 1, "port: "),
    Case("status_interval-inf", "status_interval: .inf\n", 1, "status_interval: "),
    Case("key-binary", "? !!binary AAAA\n: 1\n", 1, "YAML tags"),
    Case("allow-set", "allow: !!set {10.0.0.1}\n", 1, "allow: YAML tags"),
    Case("port-timestamp-tag", "port: !!timestamp 2001-02-30\n", 1, "port: YAML tags"),
    Case("merge-key", "<<: {port: 1}\n", 1, "<<: unknown key"),
    Case("value-key-sign", "port: =\n", 1, "port: "),
    Case("unhashable-nested-key", "rate_limit:\n  ? [rate]\n  : 5\n", 2, "rate_limit: "),
    Case("newline-in-value", 'log_level: "info\\nERROR: forged"\n', 1, "log_level: "),
    Case("escape-in-key", '"\\e[2J\\r": 1\n', 1, "unknown key"),
    Case("long-key", "? " + "k" * 200_000 + "\n: 1\n", 1, "unknown key"),
    # share_port (item 9) and groups a protocol already uses (item 1)
    Case("share_port-string", 'share_port: "yes"\n', 1, "share_port: "),
    Case("group-mdns", "group: 224.0.0.251\n", 1, "mDNS"),
    Case("group-all-hosts", "port: 9999\ngroup: 224.0.0.1\n", 2, "all-hosts"),
    Case("group-ptp", "group: 224.0.1.129\n", 1, "PTP"),
    # listeners, IPv6 and SSM (issue 9)
    Case("listeners-empty", "port: 9999\nlisteners: []\n", 2, "listeners: an empty list"),
    Case("listeners-null", "listeners:\n", 1, "listeners: null is not a list"),
    Case("listeners-scalar-item", "listeners:\n  - 239.1.1.1\n", 2, "listeners[0]: "),
    Case("listeners-too-many", "listeners:\n" + "  - {}\n" * 4097, 1, "more than 4096"),
    Case("listener-unknown-key", "listeners:\n  - group: 239.1.1.1\n    prot: 1\n", 3,
         "listeners[0].prot: unknown key"),
    Case("listener-log_level", "listeners:\n  - {group: 239.1.1.1}\n  - {group: 239.1.1.2, "
         "log_level: debug}\n", 3, "listeners[1].log_level: only at the top level"),
    Case("listener-bad-port", "listeners:\n  - group: 239.1.1.1\n    port: 0\n", 3,
         "listeners[0].port: "),
    Case("listeners-same-group-port", "listeners:\n  - group: 239.1.1.1\n"
         "  - group: 239.1.1.1\n    interface: eth1\n", 3, "one listener per group and port"),
    Case("group-ipv6-unicast", "group: 2001:db8::1\n", 1, "not a multicast address"),
    Case("group-ipv6-all-nodes", "group: ff02::1\ninterface: eth0\n", 1, "all-nodes"),
    Case("link-scope-no-interface", "listeners:\n  - group: ff02::4242\n", 2,
         "listeners[0].interface: null, but ff02::4242 is a link-scope group"),
    Case("link-scope-all", "group: ff12::4242\ninterface: all\n", 2, "named interface"),
    Case("ssm-without-sources", "group: 232.1.1.1\n", 1, "source-specific"),
    Case("sources-on-any-source", "group: 239.1.1.1\nsources: [10.0.0.5]\n", 2,
         "any-source group"),
    Case("sources-mixed", "group: 232.1.1.1\nsources:\n  - 10.0.0.5\n  - 2001:db8::5\n", 4,
         "sources: 2001:db8::5 is IPv6 but"),
    Case("sources-other-family", "group: ff35::1\nsources: [10.0.0.5]\n", 2, "not IPv6"),
    Case("sources-multicast", "group: 232.1.1.1\nsources: [232.1.1.2]\n", 2, "multicast"),
    Case("sources-duplicate", "group: 232.1.1.1\nsources: [10.0.0.5, 10.0.0.5]\n", 2,
         "listed twice"),
    Case("reply-unknown", "reply: everyone\n", 1, "reply: everyone is not a reply mode"),
    Case("allow-no-ipv6", "group: ff15::1\nallow: [10.0.0.0/8]\n", 2,
         "nothing would be answered"),
    Case("max_datagram-ipv6", "group: ff15::1\nmax_datagram: 65528\n", 2, "1..65527"),
]

IDS = [case.name for case in CASES]


def test_the_table_covers_the_issue():
    assert len(CASES) >= 40
    assert len(set(IDS)) == len(IDS)


def world_readable_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="mcast-echo-bad-"))
    path.chmod(0o755)  # nobody must reach the files (the unreadable case is about the file)
    return path


def make_bad(case: Case, path: Path) -> None:
    """Turn *path* into the bad config of *case* (whatever it was before)."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    if case.special == "directory":
        path.mkdir()
    elif case.special == "missing":
        pass
    elif case.special == "fifo":
        os.mkfifo(path)
    elif case.special == "loop":
        path.symlink_to(path.name)
    else:
        data = case.content.encode() if isinstance(case.content, str) else case.content
        path.write_bytes(data)
        path.chmod(0o000 if case.special == "unreadable" else 0o644)


def make_good(text: str, path: Path) -> None:
    make_bad(Case("good", text, None, ""), path)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@dataclass
class Run:
    code: Optional[int]  # None: killed after TIME_LIMIT
    lines: list[str]
    seconds: float


def run_cli(command: str, path: Path, as_nobody: bool) -> Run:
    cmd = [sys.executable, "-m", "mcast_echo", command, "-c", str(path)]
    env = None
    if as_nobody:
        nobody = AsUser(None, NOBODY, NOBODY)
        cmd, env = nobody.command(cmd), nobody.environ()
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIME_LIMIT, env=env,
                              stdin=subprocess.DEVNULL, preexec_fn=_limit_memory,
                              errors="replace")
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else ""
        return Run(None, err.splitlines(), time.monotonic() - started)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return Run(done.returncode, lines, time.monotonic() - started)


@pytest.fixture(scope="module")
def cli_runs():
    """Both commands on every case, all at once (each is a short Python start-up)."""
    directory = world_readable_dir()
    paths = {}
    for index, case in enumerate(CASES):
        case_dir = directory / f"{index:02d}"
        case_dir.mkdir()
        case_dir.chmod(0o755)
        paths[case.name] = case_dir / "mcast-echo.yaml"
        make_bad(case, paths[case.name])
    jobs = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for case in CASES:
            for command in ("check-config", "serve"):
                jobs[case.name, command] = pool.submit(
                    run_cli, command, paths[case.name], case.special == "unreadable")
        results = {key: job.result() for key, job in jobs.items()}
    yield paths, results
    for path in paths.values():
        if path.is_symlink() or path.exists():
            make_bad(Case("cleanup", "", None, ""), path)
    shutil.rmtree(directory, ignore_errors=True)


def names_the_place(message: str, case: Case, path: Path) -> bool:
    """The message names the file, and the line (a column may follow) when there is one."""
    line = rf":{case.line}(:\d+)?" if case.line is not None else ""
    return re.search(rf"(^|\s){re.escape(str(path))}{line}: ", message) is not None


def skip_if_unreadable_cannot_be_shown(case: Case) -> None:
    if case.special == "unreadable" and not can_become_another_user():
        pytest.skip("a mode-000 file needs another user to be unreadable (real root only)")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_check_config_gives_one_line_and_78(case, cli_runs):
    skip_if_unreadable_cannot_be_shown(case)
    paths, results = cli_runs
    path, run = paths[case.name], results[case.name, "check-config"]
    assert run.code == EX_CONFIG, (run.code, run.lines[-5:])
    assert len(run.lines) == 1, run.lines[:10]
    message = run.lines[0]
    assert names_the_place(message, case, path) and message.startswith(str(path)), message
    assert case.says in message, message
    assert len(message) <= MAX_MESSAGE + len(str(path)), message[:MAX_MESSAGE]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_serve_gives_one_error_and_78(case, cli_runs):
    skip_if_unreadable_cannot_be_shown(case)
    paths, results = cli_runs
    path = paths[case.name]
    check, serve = results[case.name, "check-config"], results[case.name, "serve"]
    assert serve.code == EX_CONFIG, (serve.code, serve.lines[-5:])
    assert len(serve.lines) == 1, serve.lines[:10]
    assert "ERROR" in serve.lines[0]
    assert len(serve.lines[0]) <= MAX_MESSAGE + len(str(path)) + 40, serve.lines[0][:200]
    assert serve.lines[0].endswith(check.lines[0]), (serve.lines[0], check.lines[0])
    assert names_the_place(serve.lines[0], case, path)


@pytest.mark.parametrize("name", ["billion-laughs", "merge-key-alias", "huge", "deep-nesting",
                                  "long-value"])
def test_bombs_are_refused_fast_in_bounded_memory(name, cli_runs):
    """Alone (not among the parallel runs), under a 512 MiB address-space limit: a billion
    laughs would need ~10^9 nodes; refusing it takes one pass over the events."""
    paths, _ = cli_runs
    for command in ("check-config", "serve"):
        run = run_cli(command, paths[name], as_nobody=False)
        assert run.code == EX_CONFIG, (run.code, run.lines)
        assert run.seconds < allowance(1.5, 6), (run.seconds, run.lines)
        assert len(run.lines) == 1, run.lines[-3:]


# ------------------------------------------------------------------ SIGHUP, one daemon

GROUP = "224.3.29.71"
PORT = 9999
GOOD = f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n"


@pytest.fixture
def nobody_daemon():
    """A daemon run as nobody (so a mode-000 file is unreadable to it) in a namespaced host,
    on a config in a directory nobody can reach."""
    directory = world_readable_dir()
    path = directory / "mcast-echo.yaml"
    make_good(GOOD, path)
    with Host("hup") as host:
        veth("vhup", "10.55.0.1/24", host, "eth0", "10.55.0.2/24")
        daemon = DaemonProcess(path, host=AsUser(host, NOBODY, NOBODY))
        try:
            daemon.wait_for("ready:")
            yield daemon, host, path
        finally:
            daemon.kill()
            unplug("vhup")
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            shutil.rmtree(directory, ignore_errors=True)


def release_fifo(path: Path) -> None:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader is waiting: nothing to release
        pass


def still_echoes(tag: bytes) -> bool:
    with sender("10.55.0.1") as sock:
        return echo(sock, tag, GROUP, PORT) == (tag, ("10.55.0.2", PORT))


def test_sighup_with_each_bad_config_keeps_the_old_one_serving(nobody_daemon):
    daemon, host, path = nobody_daemon
    assert still_echoes(b"before")
    for case in CASES:
        if case.special == "unreadable" and not can_become_another_user():
            continue  # we could read it: nothing to prove
        mark = daemon.mark()
        make_bad(case, path)
        daemon.send_signal(signal.SIGHUP)
        try:
            first = daemon.wait_for("reload failed: ", start=mark, timeout=5)
        finally:
            if case.special == "fifo":  # had the daemon blocked opening it, this frees it
                release_fifo(path)
        assert still_echoes(case.name.encode()), (case.name, daemon.log)
        failed = [line for line in daemon.lines[mark:] if "reload failed: " in line]
        assert len(failed) == 1, (case.name, failed)
        assert "ERROR" in first and names_the_place(first, case, path), (case.name, first)
        assert case.says in first, (case.name, first)
        assert daemon.proc.poll() is None
    # after all that, a good file is still taken
    mark = daemon.mark()
    make_good(f"group: 224.3.29.77\nport: {PORT}\ninterface: eth0\n", path)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("reloaded:", start=mark)
    with sender("10.55.0.1") as sock:
        assert echo(sock, b"new", "224.3.29.77", PORT) == (b"new", ("10.55.0.2", PORT))
    print(f"{len(CASES)} bad reloads survived, each followed by an echo of the old config")
