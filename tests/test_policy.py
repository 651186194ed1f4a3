"""The abuse policy: source ACL and per-source rate limit, alone and in the daemon."""

import resource

import pytest

from clients import echo, sender
from daemonproc import DaemonProcess
from mcast_echo.daemon.policy import Policy, SourceRateLimiter, raw_address
from mcast_echo.schema import Listener, RateLimit, check_allow


def passes(limiter, source, now):
    """Whether one datagram from *source* (dotted IPv4) at *now* passes *limiter*."""
    return limiter.admit(raw_address(source), 1, now) == 1


def tracked(limiter):
    """How many sources *limiter* remembers: its two generations (see SourceRateLimiter).
    White-box: the daemon never asks; the bound on it is what these tests prove."""
    return len(limiter._current) + len(limiter._old)


def test_token_bucket_allows_burst_then_rate():
    limiter = SourceRateLimiter(rate=10, burst=5)
    assert [passes(limiter, "10.0.0.1", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert passes(limiter, "10.0.0.2", 0.0)  # another source has its own bucket
    assert not passes(limiter, "10.0.0.1", 0.05)  # half a token refilled
    assert passes(limiter, "10.0.0.1", 0.15)  # 1.5 tokens now
    assert [passes(limiter, "10.0.0.1", 10.0) for _ in range(6)] == [True] * 5 + [False]


@pytest.mark.parametrize("uptime", [0.137, 86_400.0137, 100_000.137, 2_592_000.0137,
                                    31_536_000.0137])
def test_a_whole_burst_passes_however_long_the_host_has_been_up(uptime):
    # now is time.monotonic(): the host's uptime. In seconds, 1/rate added once per datagram
    # rounded the 20th of a burst of 20 away on a host up for a day (CI saw it).
    for rate, burst in [(10, 20), (3, 7), (1000, 2000), (0.5, 3)]:
        limiter = SourceRateLimiter(rate=rate, burst=burst)
        passed = [passes(limiter, "10.0.0.1", uptime) for _ in range(burst + 1)]
        assert passed == [True] * burst + [False], (rate, burst, passed.count(True))
        assert passes(limiter, "10.0.0.1", uptime + 1 / rate)  # one token refilled, exactly
        assert not passes(limiter, "10.0.0.1", uptime + 1 / rate)


def test_table_is_capped_for_100000_sources():
    limiter = SourceRateLimiter(rate=1, burst=1, capacity=65536)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(100_000):
        assert passes(limiter, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
    assert tracked(limiter) <= 65536
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024  # tens of MiB at most, however many sources come
    # the oldest were forgotten, the newest are still limited
    assert passes(limiter, "10.0.0.0", 0.0)
    assert not passes(limiter, "10.1.134.159", 0.0)  # source 99,999


def test_acl():
    policy = Policy(ipv6=False, allow=check_allow(["10.1.0.0/16", "192.0.2.7"]), rate_limit=None)
    assert policy.verdict(("10.1.200.3", 5000), None, 0) is None
    assert policy.verdict(("192.0.2.7", 5000), None, 0) is None
    assert policy.verdict(("192.0.2.8", 5000), None, 0) == "acl"
    assert policy.verdict(("10.2.0.1", 5000), None, 0) == "acl"


def test_rate_limited_and_refused_sources_get_no_echo(responder_host, write_config):
    host, local, remote = responder_host
    config = write_config(f"interface: eth0\nallow: [{local}]\n"
                          "rate_limit: {rate: 1, burst: 3}\nstatus_interval: 1\n")
    with DaemonProcess(config, host=host) as daemon:
        daemon.wait_for("ready:")
        with sender(local) as sock:
            replies = [echo(sock, b"n%d" % i, "224.3.29.71", 9999, timeout=0.3)
                       for i in range(5)]
        assert [r is not None for r in replies] == [True, True, True, False, False]
        assert "dropped: source over its 'rate_limit'" in daemon.wait_for("over its")
        # the responder host itself is not in 'allow'
        out = host.python(
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, "
            f"socket.inet_aton('{remote}'))\n"
            "s.settimeout(0.5)\n"
            "s.sendto(b'me', ('224.3.29.71', 9999))\n"
            "try:\n    print(s.recvfrom(100))\nexcept socket.timeout:\n    print('none')\n")
        assert out.stdout.strip() == "none"
        assert f"from {remote}:" in daemon.wait_for("source not in 'allow'")


def test_default_rate_limit_is_generous():
    assert Listener().rate_limit == RateLimit(1000.0, 2000)


def test_tracked_sources_are_bounded_for_the_whole_daemon(write_config):
    """#18.7: 30 listeners under a forged-source flood (64k sources each, through the same
    admit the fast path calls) track MAX_TRACKED_SOURCES in all, not 30 times it -- and
    still after a reload that adds listeners (each one's share shrinks)."""
    from mcast_echo.daemon.policy import MAX_TRACKED_SOURCES
    from test_reload import InProcessDaemon

    def config(count: int) -> str:
        return "interface: lo\nlisteners:\n" + "".join(
            f"  - group: 239.30.0.{n + 1}\n" for n in range(count))

    def tracked_by_all() -> int:
        return sum(tracked(r.policy.limiter) for r in running.daemon.responders)

    running = InProcessDaemon(write_config(config(30)))
    try:
        most = 0
        for responder in running.daemon.responders:
            admit = responder.policy.limiter.admit
            for source in range(1, 65537):  # a flood of forged sources, one datagram each
                admit(source, 1, 0.0)
            most = max(most, tracked_by_all())
        assert most <= MAX_TRACKED_SOURCES
        assert most >= MAX_TRACKED_SOURCES // 2  # two generations: at least the old one full
        write_config(config(40))

        def steps():
            running.reload(lambda: len(running.daemon.responders) == 40)
            assert tracked_by_all() <= MAX_TRACKED_SOURCES
            for responder in running.daemon.responders:
                for source in range(1, 10000):
                    responder.policy.limiter.admit(source, 1, 1.0)
                assert tracked_by_all() <= MAX_TRACKED_SOURCES

        running.serve_while(steps)
    finally:
        running.close()


def test_a_shrunk_table_keeps_the_newest_sources():
    limiter = SourceRateLimiter(rate=1, burst=1, capacity=1000)
    for source in range(1000):
        limiter.admit(source, 1, 0.0)
    limiter.resize(100)
    assert tracked(limiter) <= 100
    assert limiter.admit(999, 1, 0.0) == 0  # still known, still over its rate
    assert limiter.admit(5, 1, 0.0) == 1  # forgotten: a fresh bucket
