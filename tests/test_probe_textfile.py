"""`mcast-echo ping --prometheus-textfile`: node_exporter's textfile, read back with
prometheus_client's own parser; replaced atomically while a reader loops on it; hostile
responder names escaped and bounded (issue 11)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemonproc import DaemonProcess
from mcast_echo.ping import textfile
from mcast_echo.ping.responderstats import ResponderStats
from mcast_echo.ping.settings import Settings
from mcast_echo.ping.tally import ResponderTable, RunCounts
from netlab import Host, unplug, veth

GROUP, PORT = "224.3.29.71", 9999
FAST = ["-i", "0.05", "-W", "0.5"]


def settings(expect: int = 1, group: str = GROUP) -> Settings:
    return Settings(group=group, port=PORT, interface=None, source=None, count=4,
                    interval=1.0, size=192, ttl=1, loopback=True, wait=1.0, deadline=None,
                    expect=expect, quiet=True, json=False, numeric=True, timestamps=False,
                    config=None)


def responder(table: ResponderTable, address: str, received: int, rtts_ms=(),
              name: str | None = "host-b", hops: int | None = 0,
              port: int = PORT) -> ResponderStats:
    stats = table.lookup(address, port)
    assert stats is not None
    stats.name, stats.hops, stats.received = name, hops, received
    for rtt in rtts_ms:
        stats.rtt.add(int(rtt * 1e6))
    return stats


def parse(text: str) -> dict[str, list]:
    """name -> [(labels, value)] for every sample, as Prometheus would read them."""
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def render(table: ResponderTable, transmitted: int = 4, expect: int = 1) -> str:
    run = textfile.ProbeRun(settings(expect), table, RunCounts(transmitted=transmitted), 4.5,
                            1_700_000_000.25)
    return textfile.render(run).decode()


def test_the_textfile_is_exposition_format_with_every_series():
    table = ResponderTable(PORT)
    responder(table, "10.0.0.2", 4, (1.0, 2.0, 3.0, 2.0), name="host-b", hops=1)
    responder(table, "10.0.0.3", 2, (5.0, 7.0), name="host-c", hops=None)
    responder(table, "10.0.0.4", 0, (), name=None, hops=None)
    text = render(table, expect=3)
    for name in ("mcast_echo_probe_up", "mcast_echo_probe_rtt_seconds",
                 "mcast_echo_probe_success", "mcast_echo_probe_loss_ratio"):
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text, name
    assert "# TYPE mcast_echo_probe_rtt_seconds summary" in text
    samples = parse(text)
    run = {"group": GROUP, "port": str(PORT)}
    b = {**run, "responder": "10.0.0.2", "name": "host-b"}
    c = {**run, "responder": "10.0.0.3", "name": "host-c"}
    silent = {**run, "responder": "10.0.0.4", "name": ""}
    assert samples["mcast_echo_probe_success"] == [(run, 0.0)]  # 2 of 3 expected
    assert samples["mcast_echo_probe_responders"] == [(run, 2.0)]
    assert samples["mcast_echo_probe_expected_responders"] == [(run, 3.0)]
    assert samples["mcast_echo_probe_probes_sent"] == [(run, 4.0)]
    assert samples["mcast_echo_probe_duration_seconds"] == [(run, 4.5)]
    assert samples["mcast_echo_probe_timestamp_seconds"] == [(run, 1_700_000_000.25)]
    assert samples["mcast_echo_probe_responders_omitted"] == [(run, 0.0)]
    assert samples["mcast_echo_probe_up"] == [(b, 1.0), (c, 1.0), (silent, 0.0)]
    assert samples["mcast_echo_probe_loss_ratio"] == [(b, 0.0), (c, 0.5), (silent, 1.0)]
    assert samples["mcast_echo_probe_hops"] == [(b, 1.0)]  # unknown hops: no sample
    assert samples["mcast_echo_probe_rtt_seconds_count"] == [(b, 4.0), (c, 2.0), (silent, 0.0)]
    assert [v for _, v in samples["mcast_echo_probe_rtt_seconds_sum"]] == pytest.approx(
        [0.008, 0.012, 0.0])
    assert samples["mcast_echo_probe_rtt_min_seconds"] == [(b, 0.001), (c, 0.005)]
    assert samples["mcast_echo_probe_rtt_avg_seconds"] == [(b, 0.002), (c, 0.006)]
    assert samples["mcast_echo_probe_rtt_max_seconds"] == [(b, 0.003), (c, 0.007)]
    # node_exporter refuses files with timestamps on samples
    assert all(len(line.split()) == 2 for line in text.splitlines() if not line.startswith("#"))


def test_a_responder_on_another_port_is_its_own_series_and_not_up():
    table = ResponderTable(PORT)
    responder(table, "10.0.0.2", 3, (1.0,) * 3)
    responder(table, "10.0.0.2", 3, (1.0,) * 3, port=40000)
    responder(table, "fe80::2%eth0", 3, (1.0,) * 3, port=40000)
    up = {labels["responder"]: value for labels, value in
          parse(render(table))["mcast_echo_probe_up"]}
    assert up == {"10.0.0.2": 1.0, "10.0.0.2:40000": 0.0, "[fe80::2%eth0]:40000": 0.0}


@pytest.mark.parametrize("name", [
    'x"} mcast_echo_probe_success{group="224.3.29.71"} 1\n# HELP',
    "back\\slash\\n",
    "esc\x1b[31mred\x00nul\u202eright-to-left\r\n",
    "é" * 300,
])
def test_hostile_names_are_escaped_and_bounded(name):
    table = ResponderTable(PORT)
    responder(table, "10.0.0.2", 1, (1.0,), name=name)
    text = render(table, transmitted=1)
    samples = parse(text)
    assert samples["mcast_echo_probe_success"] == [({"group": GROUP, "port": str(PORT)}, 1.0)]
    [(labels, value)] = samples["mcast_echo_probe_up"]
    assert value == 1.0
    assert labels["name"] == textfile.name_label(name)
    assert len(labels["name"]) <= textfile.MAX_NAME
    assert labels["name"].isprintable()
    # one line per sample: nothing a peer sends starts a line of its own
    assert len(text.splitlines()) == len(text.split("\n")) - 1
    assert not any(line.startswith("# HELP x") for line in text.splitlines())


def test_at_most_max_responders_get_series_those_counted_first():
    table = ResponderTable(PORT)
    for i in range(textfile.MAX_RESPONDERS + 44):
        responder(table, f"10.1.{i // 250}.{i % 250 + 1}", 0, ())
    responder(table, "10.9.9.9", 1, (1.0,))  # the only one that answered: sorts last by address
    samples = parse(render(table, transmitted=1))
    assert len(samples["mcast_echo_probe_up"]) == textfile.MAX_RESPONDERS
    assert ({"group": GROUP, "port": str(PORT), "responder": "10.9.9.9", "name": "host-b"},
            1.0) in samples["mcast_echo_probe_up"]
    assert samples["mcast_echo_probe_responders_omitted"][0][1] == 45


def test_replaced_atomically_while_a_reader_loops(tmp_path):
    """A reader that opens the file in a loop sees one whole version or another, never a
    part: every read parses and ends where a version ends. 200 writes, sizes differing."""
    path = tmp_path / "mcast-echo.prom"
    versions = []
    for n in range(1, 9):
        table = ResponderTable(PORT)
        for i in range(n * 20):
            responder(table, f"10.0.{i // 200}.{i % 200 + 1}", 1, (1.0,), name=f"host-{i}")
        versions.append(render(table, transmitted=1).encode())
    textfile.replace(str(path), versions[0])
    done = threading.Event()
    seen: list[bytes] = []
    problems: list[str] = []

    def reader() -> None:
        for _ in range(200_000):  # bounded; ends when the writer is done
            if done.is_set():
                return
            data = path.read_bytes()
            if data not in versions:
                problems.append(f"a read of {len(data)} bytes matches no version")
                return
            seen.append(data)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            textfile.replace(str(path), versions[i % len(versions)])
    finally:
        done.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert not problems, problems
    assert len(seen) > 10 and len(set(seen)) > 1, "the reader saw too little to prove it"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["mcast-echo.prom"], "a temporary file was left behind"


def test_mode_is_0644_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        textfile.replace(str(tmp_path / "a.prom"), b"x 1\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.prom").stat().st_mode) == 0o644


def ping(*args: str, host: Host | None, config: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mcast_echo", "ping", "--config", config, *args]
    if host is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return host.run(cmd, check=False, timeout=30)


@pytest.fixture(scope="module")
def devbox(tmp_path_factory):
    """The daemon on another host, at the other end of a cable from the test's namespace,
    where ping runs: (None, the client's config). A daemon on ping's own host would be
    local, and never count."""
    directory = tmp_path_factory.mktemp("devbox")
    served = directory / "served.yaml"
    served.write_text(f"group: {GROUP}\nport: {PORT}\ninterface: eth0\n")
    client = directory / "mcast-echo.yaml"
    client.write_text(f"group: {GROUP}\nport: {PORT}\ninterface: vprobe0\n")
    with Host("probebox") as host:
        veth("vprobe0", "10.73.0.1/24", host, "eth0", "10.73.0.2/24")
        daemon = DaemonProcess(served, host=host)
        try:
            daemon.wait_for("ready:")
            yield None, str(client)
        finally:
            daemon.stop()
            unplug("vprobe0")


def test_a_run_against_the_daemon_writes_success(devbox, tmp_path):
    host, config = devbox
    path = tmp_path / "mcast-echo.prom"
    done = ping("-q", "-n", "-c", "3", *FAST, "--expect", "1", "--prometheus-textfile",
                str(path), host=host, config=config)
    assert done.returncode == 0, done.stderr
    samples = parse(path.read_text())
    run = {"group": GROUP, "port": str(PORT)}
    assert samples["mcast_echo_probe_success"] == [(run, 1.0)]
    assert samples["mcast_echo_probe_responders"] == [(run, 1.0)]
    assert samples["mcast_echo_probe_probes_sent"] == [(run, 3.0)]
    [(labels, up)] = samples["mcast_echo_probe_up"]
    assert (labels, up) == ({**run, "responder": "10.73.0.2", "name": "probebox"}, 1.0)
    assert samples["mcast_echo_probe_local_responders"] == [(run, 0.0)]
    assert samples["mcast_echo_probe_hops"] == [(labels, 0.0)]
    assert samples["mcast_echo_probe_loss_ratio"] == [(labels, 0.0)]
    assert 0 < samples["mcast_echo_probe_rtt_max_seconds"][0][1] < 1
    assert abs(samples["mcast_echo_probe_timestamp_seconds"][0][1] - time.time()) < 30


def test_fewer_responders_is_exit_1_and_success_0(devbox, tmp_path):
    host, config = devbox
    path = tmp_path / "mcast-echo.prom"
    done = ping("-q", "-n", "-c", "2", *FAST, "--expect", "2", "--prometheus-textfile",
                str(path), host=host, config=config)
    assert done.returncode == 1, done.stderr
    samples = parse(path.read_text())
    assert samples["mcast_echo_probe_success"][0][1] == 0.0
    assert samples["mcast_echo_probe_expected_responders"][0][1] == 2.0


def test_a_network_error_is_exit_2_and_the_file_says_the_probe_failed(tmp_path):
    path = tmp_path / "mcast-echo.prom"
    config = tmp_path / "mcast-echo.yaml"
    config.write_text(f"group: {GROUP}\nport: {PORT}\n")
    with Host("noroute") as host:  # only lo, no route to the group
        done = ping("-q", "-c", "1", "--prometheus-textfile", str(path), host=host,
                    config=str(config))
    assert done.returncode == 2
    assert "no route to 224.3.29.71" in done.stderr
    samples = parse(path.read_text())
    assert samples["mcast_echo_probe_success"][0][1] == 0.0
    assert samples["mcast_echo_probe_responders"][0][1] == 0.0
    assert "mcast_echo_probe_up" not in samples


def test_a_config_error_writes_no_file(tmp_path):
    """Without a group there is nothing to label: the old file stays, its timestamp ages
    (McastEchoProbeStale) and the unit fails."""
    path = tmp_path / "mcast-echo.prom"
    config = tmp_path / "mcast-echo.yaml"
    config.write_text("port: 70000\n")
    done = subprocess.run([sys.executable, "-m", "mcast_echo", "ping", "--config", str(config),
                           "-c", "1", "--prometheus-textfile", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert not path.exists()


@pytest.mark.parametrize("where, message", [
    ("missing/mcast-echo.prom", "No such file or directory"),
    ("file/mcast-echo.prom", "Not a directory"),
])
def test_a_textfile_that_cannot_be_written_is_exit_2_in_one_line(devbox, tmp_path, where,
                                                                  message):
    host, config = devbox
    (tmp_path / "file").write_text("")
    path = tmp_path / where
    done = ping("-q", "-n", "-c", "1", *FAST, "--prometheus-textfile", str(path), host=host,
                config=config)
    assert done.returncode == 2
    assert done.stderr == (f"mcast-echo ping: cannot write --prometheus-textfile {path}: "
                           f"{message}\n")
    assert os.listdir(tmp_path) == ["file"]


def refusal(path, kind: str) -> str:
    return (f"cannot write --prometheus-textfile {path}: it is {kind}, not a regular file, "
            "and is left as it is (only a regular file is replaced): remove it, or pass the "
            "path of a regular file, e.g. /var/lib/prometheus/node-exporter/mcast-echo.prom")


def test_a_fifo_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "mcast-echo.prom"
    os.mkfifo(path)
    before = os.lstat(path)
    with pytest.raises(textfile.TextfileError) as raised:
        textfile.replace(str(path), b"x 1\n")  # would block for ever if it opened the FIFO
    assert str(raised.value) == refusal(path, "a FIFO")
    after = os.lstat(path)
    assert stat.S_ISFIFO(after.st_mode) and after.st_ino == before.st_ino
    assert os.listdir(tmp_path) == ["mcast-echo.prom"], "a temporary file was left behind"


def test_a_character_device_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "null"
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
    except PermissionError:
        pytest.skip("mknod of a character device needs CAP_MKNOD")
    before = os.lstat(path)
    with pytest.raises(textfile.TextfileError) as raised:
        textfile.replace(str(path), b"x 1\n")
    assert str(raised.value) == refusal(path, "a character device")
    after = os.lstat(path)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino
    assert os.listdir(tmp_path) == ["null"]


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_is_refused_and_neither_it_nor_its_target_changes(tmp_path, dangling):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "secret"
    if not dangling:
        target.write_bytes(b"keep me\n")
    directory = tmp_path / "textfiles"
    directory.mkdir()
    path = directory / "mcast-echo.prom"
    path.symlink_to(target)
    with pytest.raises(textfile.TextfileError) as raised:
        textfile.replace(str(path), b"x 1\n")
    assert str(raised.value) == refusal(path, "a symbolic link")
    assert os.readlink(path) == str(target)
    if dangling:
        assert not target.exists()
    else:
        assert target.read_bytes() == b"keep me\n"
    assert os.listdir(directory) == ["mcast-echo.prom"]


def test_a_directory_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "mcast-echo.prom"
    path.mkdir()
    (path / "inside").write_text("x")
    with pytest.raises(textfile.TextfileError) as raised:
        textfile.replace(str(path), b"x 1\n")
    assert str(raised.value) == refusal(path, "a directory")
    assert os.listdir(path) == ["inside"] and os.listdir(tmp_path) == ["mcast-echo.prom"]


def test_a_regular_file_is_replaced_by_rename_not_rewritten(tmp_path):
    """The old inode is untouched (a reader holding it open still reads the old run) and a
    hard link to it elsewhere keeps the old text: the new file is a new inode."""
    path = tmp_path / "mcast-echo.prom"
    path.write_bytes(b"old 1\n")
    os.link(path, tmp_path / "held")
    old_inode = path.stat().st_ino
    with open(path, "rb") as held:
        textfile.replace(str(path), b"new 2\n")
        assert held.read() == b"old 1\n"
    assert path.read_bytes() == b"new 2\n" and path.stat().st_ino != old_inode
    assert (tmp_path / "held").read_bytes() == b"old 1\n"
    assert sorted(os.listdir(tmp_path)) == ["held", "mcast-echo.prom"]


def test_ping_refuses_a_fifo_textfile_with_exit_2(devbox, tmp_path):
    host, config = devbox
    path = tmp_path / "mcast-echo.prom"
    os.mkfifo(path)
    done = ping("-q", "-n", "-c", "1", *FAST, "--prometheus-textfile", str(path), host=host,
                config=config)
    assert done.returncode == 2
    assert done.stderr == f"mcast-echo ping: {refusal(path, 'a FIFO')}\n"
    assert stat.S_ISFIFO(os.lstat(path).st_mode) and os.listdir(tmp_path) == ["mcast-echo.prom"]
