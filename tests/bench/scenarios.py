"""What `make bench` measures: its responders, the daemon configs they run, and how the
generator drives each (the family, the reply mode it expects, the groups it spreads over).

The rows of issue 8 (the daemon and its plain path beside the C echo and the seed's loop, at
64 B and 1,400 B, with RTT, ping, RSS through a flood) and of issue 21 (IPv6 beside the C echo
over IPv6; `reply: group` and `both` beside the daemon's own unicast mode, with the C echo's
group and both modes for reference; 1,000 listeners with traffic round-robin over 100 of them
beside the one-group daemon, and the time until all 100 answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP, GROUP6, PORT, IFNAME = "224.3.29.71", "ff05::1234", 9999, "lo"
LISTENERS = 1000  # the many-groups daemon's listeners, and BENCH_GROUPS's default
SPREAD_EVERY = 10  # ... of which every 10th gets traffic: 100 of the 1,000

# The daemon through its real config and code path, policy on (an allow list and a rate
# limit set so high that nothing is refused: the work is done, nothing dropped), its
# Prometheus endpoint on (issue 11: the figures must hold with metrics on). The interface is
# `--interface lo` on the command line, which overrides every listener's.
POLICY = {4: "allow: [127.0.0.0/8]\n", 6: 'allow: ["::1/128"]\n'}
DAEMON_DEFAULTS = f"""\
port: {PORT}
rate_limit: {{rate: 10000000, burst: 10000000}}
metrics: {{listen: "127.0.0.1:9101"}}
"""
# Echoes to the group: a TTL above 1 only so that the daemon does not warn that they stay
# on the link; the bench's namespace has nothing but lo.
GROUP_REPLY = "ttl: 2\n"


def other_groups(count: int) -> list[str]:
    """*count* idle IPv4 groups besides GROUP, for the listeners of the bigger configs."""
    return [f"239.20.{n // 250}.{n % 250 + 1}" for n in range(count)]


def daemon_config(groups: int = 1, family: int = 4, reply: str = "unicast") -> str:
    """The YAML of a daemon with *groups* listeners (the measured one first), one group
    each, all on PORT."""
    first = GROUP if family == 4 else GROUP6
    reply_keys = "" if reply == "unicast" else f"reply: {reply}\n{GROUP_REPLY}"
    return (DAEMON_DEFAULTS + POLICY[family] + reply_keys + "listeners:\n"
            + "".join(f'  - group: "{group}"\n' for group in [first, *other_groups(groups - 1)]))


def spread_groups(groups: int = LISTENERS, every: int = SPREAD_EVERY) -> list[str]:
    """The groups the many-listeners row sends to, round-robin: every *every*th listener's."""
    return [GROUP, *other_groups(groups - 1)][::every]


@dataclass(frozen=True)
class Spec:
    """One responder of the bench, and how the generator drives it."""

    key: str
    label: str
    kind: str  # "daemon" or "reference"
    env: dict = field(default_factory=dict)
    config: str = "bench"  # daemons: which of Bench.configs they run
    family: int = 4
    reply: str = "unicast"  # where the echoes go: what the generator expects
    sizes: tuple[int, ...] = (64, 1400)
    full: bool = True  # also RTT, ping idle and loaded, a flood (issue 8's rows)
    spread_every: int = 0  # > 0: traffic round-robin over every Nth listener's group
    probe: bool = False  # the time from exec until every group the generator uses answers

    def targets(self, listeners: int) -> list[str]:
        """The groups the generator sends to (round-robin), of a daemon with *listeners*."""
        if self.spread_every:
            return spread_groups(listeners, self.spread_every)
        return [GROUP if self.family == 4 else GROUP6]


POLICY_LABEL = "allow + rate limit on"
SPECS = {s.key: s for s in (
    Spec("daemon", f"`mcast-echo serve` ({POLICY_LABEL})", "daemon"),
    Spec("plain", "`mcast-echo serve`, plain path (MCAST_ECHO_ECHO_PATH=plain)", "daemon",
         {"MCAST_ECHO_ECHO_PATH": "plain"}),
    Spec("fast", "`mcast-echo serve`, fast path (MCAST_ECHO_ECHO_PATH=fast)", "daemon",
         {"MCAST_ECHO_ECHO_PATH": "fast"}),
    Spec("c", "C recvfrom/sendto echo (cecho.c)", "reference"),
    Spec("seed", "plain Python recvfrom/sendto loop (seed_echo.py)", "reference"),
    # issue 21
    Spec("c6", "C echo over IPv6", "reference", family=6, full=False),
    Spec("daemon6", f"`mcast-echo serve`, one IPv6 listener ({POLICY_LABEL})", "daemon",
         config="v6", family=6, full=False),
    Spec("daemon1", "`mcast-echo serve`, one IPv4 listener, unicast", "daemon",
         config="one", sizes=(64,), full=False, probe=True),
    Spec("group", "`mcast-echo serve`, `reply: group`", "daemon", config="group",
         reply="group", sizes=(64,), full=False),
    Spec("both", "`mcast-echo serve`, `reply: both`", "daemon", config="both", reply="both",
         sizes=(64,), full=False),
    Spec("cgroup", "C echo, echoes to the group", "reference", reply="group", sizes=(64,),
         full=False),
    Spec("cboth", "C echo, echoes to the sender and the group", "reference", reply="both",
         sizes=(64,), full=False),
    Spec("many", f"`mcast-echo serve`, {LISTENERS:,} listeners, traffic round-robin over "
         f"every {SPREAD_EVERY}th", "daemon", sizes=(64,), full=False,
         spread_every=SPREAD_EVERY, probe=True),
)}
DEFAULT_RESPONDERS = "c,daemon,plain,seed,c6,daemon6,daemon1,group,both,cgroup,cboth,many"


def configs(groups: int) -> dict[str, str]:
    """Every daemon config a Spec may name; "bench" has *groups* listeners (BENCH_GROUPS)."""
    return {"bench": daemon_config(groups), "one": daemon_config(1),
            "v6": daemon_config(1, family=6), "group": daemon_config(1, reply="group"),
            "both": daemon_config(1, reply="both")}
