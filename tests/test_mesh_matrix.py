"""`mcast-echo mesh`, the pure part: counters read from a daemon's exposition, their
increase over a window, the matrix and what it names (deaf, silent, partition, dead, loss),
and the text and JSON that say it. The same command against real daemons: test_mesh_view.py."""

from __future__ import annotations

import pytest

from mcast_echo.meshview import counters, matrix, report
from mcast_echo.meshview.counters import HostCounts
from mcast_echo.meshview.fetch import FetchError, samples
from meshtext import exposition

A, B, C, D, E, F = (f"10.0.0.{i}" for i in range(1, 7))


def read(text: str, source: str = "test", fallback=None) -> HostCounts:
    found = counters.from_samples(samples(text), source, fallback)
    assert found is not None
    return found


def mesh(hears: dict[str, set[str]], sent: float = 50, loss: float = 0.0) -> list[HostCounts]:
    """Increases over one window: each host sent *sent* probes; *hears*[R] is the set of
    probers R hears (and so answers: the reply comes back by unicast)."""
    hosts = []
    for me in hears:
        replies = {r: sent * (1 - loss) if me in hears[r] else 0.0 for r in hears if r != me}
        heard = {p: sent * (1 - loss) if p in hears[me] else 0.0 for p in hears if p != me}
        hosts.append(HostCounts(f"http://{me}:9101/metrics", me, sent, replies, heard))
    return hosts


def everyone(hosts: list[str]) -> dict[str, set[str]]:
    return {h: set(hosts) - {h} for h in hosts}


def test_the_counters_are_read_from_the_exposition_by_name():
    text = exposition(A, 120, {B: 118, C: 0}, {B: 119, C: 3}, peers_heard=2, host="host-a")
    found = read(text)
    assert (found.address, found.sent, found.peers_heard, found.name) == (A, 120, 2, "host-a")
    assert found.replies == {B: 118, C: 0} and found.heard == {B: 119, C: 3}


def test_without_the_info_series_the_urls_address_is_the_hosts():
    assert read(exposition(None, 1, {}, {}), fallback=B).address == B
    assert read(exposition(None, 1, {}, {})).address is None


def test_a_daemon_without_mesh_has_no_counters():
    assert counters.from_samples(samples("mcast_echo_echoes_total 3\n"), "x") is None


@pytest.mark.parametrize("label", ["host-b", "10.0.0.300", "\x1b[2J", "10.0.0.1%eth0",
                                   "fe80::1%\u202eeth0", "1" * 70])
def test_a_peer_label_that_is_no_address_is_counted_malformed_not_a_peer(label):
    text = exposition(A, 10, {B: 10}, {B: 10}).replace(f'responder="{B}"', f'responder="{label}"')
    found = read(text)
    assert found.replies == {} and found.malformed == 1 and found.heard == {B: 10}


def test_an_ipv6_link_local_peer_keeps_its_zone():
    found = read(exposition(A, 10, {"fe80::0:2%eth0": 10}, {}))
    assert found.replies == {"fe80::2%eth0": 10}


def test_hostile_text_is_one_error_line_never_a_traceback():
    with pytest.raises(FetchError, match="not Prometheus text"):
        list(samples('mcast_echo_mesh_probes_sent_total{a="b" 3\n'))
    with pytest.raises(FetchError, match="more than 5 samples"):
        list(samples("".join(f"x{i} 1\n" for i in range(6)), max_samples=5))


def test_the_increase_takes_a_reset_as_a_restart_and_a_new_peer_whole():
    before = HostCounts("u", A, 100, {B: 90}, {B: 95})
    after = HostCounts("u", A, 150, {B: 140, C: 20}, {B: 3})  # heard reset: restarted
    gained = counters.increase(before, after)
    assert (gained.sent, gained.replies, gained.heard) == (50, {B: 50, C: 20}, {B: 3})


def test_a_healthy_mesh_has_every_pair_healthy():
    view = matrix.build(mesh(everyone([A, B, C, D, E, F])))
    assert view.healthy and view.healthy_pairs() == 30 and len(view.paths) == 30
    assert view.path(A, B).ratio(matrix.FORWARD) == 1.0


def test_a_deaf_host_is_named_and_its_dead_column_is_not_listed_again():
    hears = everyone([A, B, C, D])
    hears[C] = set()  # C's port gets no multicast: it hears nobody, all hear C
    view = matrix.build(mesh(hears))
    assert view.deaf == [C] and not view.partitions and not view.dead and not view.healthy
    for prober in (A, B, D):
        assert view.path(prober, C).ratio(matrix.FORWARD) == 0
        assert view.path(prober, C).ratio(matrix.REVERSE) == 0
        assert view.path(C, prober).ratio(matrix.FORWARD) == 1  # its own probes still go out
    assert view.healthy_pairs() == 9  # 12 pairs, less C's column


def test_two_groups_that_cannot_hear_each_other_are_a_partition():
    hears = {A: {B, C}, B: {A, C}, C: {A, B}, D: {E, F}, E: {D, F}, F: {D, E}}
    view = matrix.build(mesh(hears))
    assert view.partitions == [[A, B, C], [D, E, F]]
    assert not view.deaf and not view.dead  # the cross-partition paths are the partition's
    lines = report.findings_lines(view)
    assert lines == ["partition: 2 groups whose multicast does not cross: [1 2 3] | [4 5 6]"]


def test_a_one_way_dead_path_and_a_lossy_one_are_named():
    hosts = mesh(everyone([A, B, C]))
    a, b, c = hosts
    hosts[2] = HostCounts(c.source, C, 50, c.replies, {**c.heard, A: 0.0})  # C misses A's
    hosts[0] = HostCounts(a.source, A, 50, {**a.replies, C: 0.0, B: 40.0}, a.heard)
    view = matrix.build(hosts)
    dead = {(f.path.prober, f.path.responder, f.direction) for f in view.dead}
    lossy = {(f.path.prober, f.path.responder, f.direction, f.ratio) for f in view.lossy}
    assert dead == {(A, C, matrix.FORWARD), (A, C, matrix.REVERSE)}
    assert lossy == {(A, B, matrix.FORWARD, 0.8)}
    assert not view.partitions and not view.deaf


def test_a_host_that_stopped_probing_is_silent_and_its_row_unknown():
    hosts = mesh(everyone([A, B, C]))
    hosts[1] = HostCounts(hosts[1].source, B, 0, hosts[1].replies, hosts[1].heard)
    view = matrix.build(hosts)
    assert view.silent == [B] and view.path(B, A).ratio(matrix.FORWARD) is None
    assert "  ?/?" in "\n".join(report.matrix_lines(view))


def test_two_scrapes_a_moment_apart_never_make_a_ratio_over_one():
    hosts = mesh(everyone([A, B]))
    hosts[1] = HostCounts(hosts[1].source, B, 50, {A: 51}, {A: 52})
    assert matrix.build(hosts).path(B, A).ratio(matrix.FORWARD) == 1.0


def test_the_same_daemon_twice_is_one_host():
    hosts = mesh(everyone([A, B]))
    assert len(matrix.build(hosts + hosts[:1]).hosts) == 2


def test_the_text_escapes_a_hosts_name_and_the_json_keeps_it():
    hosts = mesh(everyone([A, B]))
    hosts[0] = HostCounts(hosts[0].source, A, 50, hosts[0].replies, hosts[0].heard,
                          name="evil\x1b]0;owned\x07")
    view = matrix.build(hosts)
    text = "\n".join(report.text(view, 10.0, {"http://x:1/metrics": "timed out\x1b[2J"}))
    assert "\x1b" not in text and "\x07" not in text and "evil\\x1b]0;owned\\x07" in text
    assert "unreachable: http://x:1/metrics: timed out\\x1b[2J" in text
    document = report.json_document(view, 10.0, {}, 0, {})
    assert document["hosts"][0]["name"] == "evil\x1b]0;owned\x07"
    assert [p["forward"] for p in document["pairs"]] == [1.0, 1.0]


def test_the_matrix_has_a_row_per_prober_and_a_column_per_responder():
    hears = everyone([A, B, C])
    hears[C] = set()
    lines = report.matrix_lines(matrix.build(mesh(hears)))
    assert lines[0].split() == ["1", "2", "3"]
    rows = [line.split()[2:] for line in lines[1:]]
    assert rows == [["-", "0/0", "100/100"], ["0/0", "-", "100/100"], ["0/0", "0/0", "-"]]
