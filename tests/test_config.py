"""The config file: defaults, sizes, and one exact message per problem, with its line."""

import ipaddress
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadlab import AsUser, needs_another_user
from mcast_echo.addresses import REFUSED_GROUPS, refused_group
from mcast_echo.cli import main
from mcast_echo.config import DAEMON_ADVICE, PING_ADVICE, ConfigError, describe, load_config
from mcast_echo.schema import Config, Listener, parse_size
from netlab import Host

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "etc" / "mcast-echo.yaml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mcast-echo.yaml"
    path.write_text(text)
    return str(path)


def test_shipped_file_reproduces_the_seed_defaults():
    config = load_config(str(SHIPPED))
    assert config.listeners == (Listener(),)
    only = config.listeners[0]
    assert (only.group, only.port, only.interface) == ("224.3.29.71", 9999, None)
    assert (only.ttl, only.loopback, only.max_datagram) == (1, True, 65507)
    assert (config.log_level, config.status_interval) == ("info", 5.0)


def test_shipped_file_documents_every_key():
    text = SHIPPED.read_text()
    for line in describe(Config(path="x"))[1:]:
        key = line.split(":")[0]
        assert f"\n{key}:" in text, f"{key} is not in etc/mcast-echo.yaml"


def test_a_full_file(tmp_path):
    config = load_config(write(tmp_path, """
group: 239.1.2.3
port: 5000
interface: eth1
recv_buffer: 4MiB
send_buffer: 65536
ttl: 8
loopback: false
max_datagram: 1400
log_level: DEBUG
status_interval: 2
"""))
    assert config.listeners[0] == Listener("239.1.2.3", 5000, "eth1", recv_buffer=4 << 20,
                                           send_buffer=65536, ttl=8, loopback=False,
                                           max_datagram=1400)
    assert config.log_level == "debug"


def test_policy_keys(tmp_path):
    import ipaddress

    from mcast_echo.schema import RateLimit
    config = load_config(write(tmp_path, "allow: [10.0.0.0/8, 192.0.2.7]\n"
                                         "rate_limit: {rate: 5, burst: 10}\n"))
    assert config.listeners[0].allow == (ipaddress.IPv4Network("10.0.0.0/8"),
                                         ipaddress.IPv4Network("192.0.2.7/32"))
    assert config.listeners[0].rate_limit == RateLimit(5.0, 10)
    off = load_config(write(tmp_path, "rate_limit: off\n"))
    assert off.listeners[0].rate_limit is None
    assert "rate_limit: off" in describe(off)


def test_empty_mapping_means_all_defaults(tmp_path):
    assert load_config(write(tmp_path, "{}\n")).listeners == (Listener(),)


def test_interface_may_be_an_address(tmp_path):
    assert load_config(write(tmp_path, "interface: 10.1.2.3\n")).listeners[0].interface \
        == "10.1.2.3"


def test_command_line_override_wins_and_is_checked(tmp_path):
    path = write(tmp_path, "interface: eth0\n")
    assert load_config(path, {"interface": "lo"}).listeners[0].interface == "lo"
    with pytest.raises(ConfigError) as e:
        load_config(path, {"interface": "bad name"})
    assert e.value.problems == ["command line: --interface: 'bad name' is not a valid interface "
                                "name (1-15 characters, no spaces or slashes, e.g. eth0)"]


@pytest.mark.parametrize("text,size", [
    ("65536", 65536), ("4MiB", 4 << 20), ("4 MiB", 4 << 20), ("512KiB", 512 << 10),
    ("1M", 1 << 20), ("8MB", 8_000_000), ("1GiB", 1 << 30), ("2048b", 2048),
])
def test_sizes(text, size):
    assert parse_size(text) == size


KNOWN_KEYS = ("known keys: group, port, share_port, interface, sources, reply, recv_buffer, "
              "send_buffer, ttl, loopback, max_datagram, allow, rate_limit, log_level, "
              "status_interval, metrics, ssmping, mesh, listeners")
BAD = [
    # (file text, exact message after "PATH:")
    ("port: 70000\n", "1: port: 70000 is out of range 1..65535"),
    ("port: 0\n", "1: port: 0 is out of range 1..65535"),
    ("port: abc\n", "1: port: abc is not an integer (allowed: 1..65535)"),
    ("port: 99.5\n", "1: port: 99.5 is not an integer (allowed: 1..65535)"),
    ("port: true\n", "1: port: true is not an integer (allowed: 1..65535)"),
    ("port: [1, 2]\n", "1: port: a list is not an integer (allowed: 1..65535)"),
    ("\n\ngroup: 10.0.0.1\n", "3: group: 10.0.0.1 is not a multicast address (allowed: "
     "224.0.0.0/4, e.g. 224.3.29.71; use 239.0.0.0/8 for a private group)"),
    ("group: 300.1.1.1\n", "1: group: 300.1.1.1 is not a multicast group address (allowed: "
     "IPv4 224.0.0.0/4 such as 224.3.29.71, or IPv6 ff00::/8 such as ff15::1234)"),
    ("group: 224\n", "1: group: 224 is not a multicast group address (allowed: IPv4 "
     "224.0.0.0/4 such as 224.3.29.71, or IPv6 ff00::/8 such as ff15::1234)"),
    ("group: ff02::1\n", "1: group: ff02::1 is the all-nodes group of the link: not free for "
     "an echo responder; use an administratively scoped group (ff15::/16, e.g. ff15::1234)"),
    ("group:\n", "1: group: null is not a multicast group address (allowed: IPv4 224.0.0.0/4 "
     "such as 224.3.29.71, or IPv6 ff00::/8 such as ff15::1234)"),
    ("interface: 'eth 0'\n", "1: interface: 'eth 0' is not a valid interface name "
     "(1-15 characters, no spaces or slashes, e.g. eth0)"),
    ("interface: averyveryverylongname\n", "1: interface: 'averyveryverylongname' is not a "
     "valid interface name (1-15 characters, no spaces or slashes, e.g. eth0)"),
    ("interface: 10.0.0.300\n", "1: interface: 10.0.0.300 is not a valid IPv4 address"),
    ("interface: 5\n", "1: interface: 5 is not an interface (allowed: a name such as eth0, "
     "an IPv4 or IPv6 address of this host, all for every multicast interface, or null for "
     "the route to the group)"),
    ("recv_buffer: 4 lots\n", "1: recv_buffer: 4 lots is not a size (allowed: bytes such as "
     "4194304, or a number with KiB, MiB, GiB, KB, MB, GB)"),
    ("recv_buffer: -5\n", "1: recv_buffer: -5 is out of range 1KiB..2GiB (1024..2147483647 "
     "bytes)"),
    ("send_buffer: 8GiB\n", "1: send_buffer: 8GiB is out of range 1KiB..2GiB "
     "(1024..2147483647 bytes)"),
    ("send_buffer: yes\n", "1: send_buffer: true is not a size (allowed: bytes such as "
     "4194304, or 4MiB)"),
    ("ttl: 256\n", "1: ttl: 256 is out of range 0..255"),
    ("ttl: -1\n", "1: ttl: -1 is out of range 0..255"),
    ("loopback: 1\n", "1: loopback: 1 is not a boolean (allowed: true or false)"),
    ("loopback: maybe\n", "1: loopback: maybe is not a boolean (allowed: true or false)"),
    ("max_datagram: 65508\n", "1: max_datagram: 65508 is out of range 1..65507 (the largest "
     "UDP payload over IPv4; up to 65527 for an IPv6 group)"),
    ("max_datagram: 0\n", "1: max_datagram: 0 is out of range 1..65507"),
    ("log_level: loud\n", "1: log_level: loud is not a log level (allowed: debug, info, "
     "warning, error)"),
    ("status_interval: 0.5\n", "1: status_interval: 0.5 is out of range 1..3600 seconds"),
    ("prot: 9999\n", "1: prot: unknown key; did you mean 'port'?"),
    ("groups: 224.1.1.1\n", "1: groups: unknown key; did you mean 'group'?"),
    ("recvbuffer: 1MiB\n", "1: recvbuffer: unknown key; did you mean 'recv_buffer'?"),
    ("colour: blue\n", "1: colour: unknown key; " + KNOWN_KEYS),
    ("allow: 10.0.0.0/8\n", "1: allow: 10.0.0.0/8 is not a list of source networks "
     "(allowed: e.g. [10.0.0.0/8, 192.0.2.7, 2001:db8::/32], or null for any source)"),
    ("allow: []\n", "1: allow: [] (an empty list) would answer no source at all: list the "
     "sources to answer, e.g. [10.0.0.0/8, 2001:db8::/32], or write allow: null to answer any "
     "source"),
    ("allow:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n", "3: allow: 10.0.0.0/33 is not an IP "
     "network (allowed: an address or CIDR such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)"),
    ("allow: [fe80::/10]\n", "1: allow: [fe80::/10] holds no IPv4 network, so nothing would "
     "be answered on 224.3.29.71: add one (e.g. 10.0.0.0/8) or write allow: null"),
    ("rate_limit: on\n", "1: rate_limit: true is not a rate limit (allowed: off, or a "
     "mapping such as {rate: 1000, burst: 2000})"),
    ("rate_limit:\n  rate: 100\n  brust: 5\n", "3: rate_limit: brust: unknown key "
     "(allowed: rate, burst)"),
    ("rate_limit:\n  rate: 0\n", "2: rate_limit: rate: 0 is not a rate (allowed: "
     "1..10000000 datagrams per second per source)"),
    ("rate_limit: {rate: 10, burst: many}\n", "1: rate_limit: burst: many is not an "
     "integer (allowed: 1..10000000)"),
    ("port: 1\nttl: 2\nport: 3\n", "3: port: duplicate key (first set on line 1); keep one"),
    ("? [a, b]\n: 1\n", "1: a list: a key must be a name such as 'port'"),
    ("port: [1\n", "2:1: YAML syntax error: while parsing a flow sequence expected ',' or ']', "
     "but got '<stream end>'"),
    ("port: 1\n  ttl: 2\n", "2:6: YAML syntax error: mapping values are not allowed here"),
    ("- port: 1\n", "1: the file must be a mapping of 'key: value' lines, not a list"),
    ("just a string\n", "1: the file must be a mapping of 'key: value' lines, not just a "
     "string"),
    ("a: &x 1\nb: *x\n", "1: YAML anchors and aliases (&x / *x) are not allowed here: write "
     "each value out"),
    ("port: 1\n---\nport: 2\n", "2: a second YAML document ('---'): put all settings in one"),
    # every value the YAML loader can produce (issue 12, item 6)
    ("2001-02-30: 1\n", "1: 2001-02-30: unknown key; " + KNOWN_KEYS),
    ("2001-02-30\n", "1: the file must be a mapping of 'key: value' lines, not 2001-02-30"),
    ("port: 2001-02-30\n", "1: port: 2001-02-30 is not an integer (allowed: 1..65535)"),
    ("log_level: 2001-01-01 10:00:00\n", "1: log_level: 2001-01-01 10:00:00 is not a log level "
     "(allowed: debug, info, warning, error)"),
    ("9" * 5000 + "\n", "1: the file must be a mapping of 'key: value' lines, not " + "9" * 60
     + "... (5000 characters)"),
    ("ttl: 1\n? " + "9" * 5000 + "\n: 1\n", "2: " + "9" * 60 + "... (5000 characters) is too "
     "large: no setting takes an integer of more than 10 digits; a key must be a name such as "
     "'port'"),
    ("port: -" + "9" * 5000 + "\n", "1: port: -" + "9" * 59 + "... (5001 characters) is too "
     "large: no setting takes an integer of more than 10 digits"),
    ("rate_limit:\n  burst: 0x" + "f" * 5000 + "\n", "2: rate_limit: 0x" + "f" * 58 + "... "
     "(5002 characters) is too large: no setting takes an integer of more than 10 digits"),
    ("port: !!binary AAAA\n", "1: port: YAML tags (tag:yaml.org,2002:binary) are not allowed "
     "here: write plain values"),
    ("allow: !!set {10.0.0.1, 10.0.0.2}\n", "1: allow: YAML tags (tag:yaml.org,2002:set) are "
     "not allowed here: write plain values"),
    ("port: .nan\n", "1: port: nan is not an integer (allowed: 1..65535)"),
    ("port: .inf\n", "1: port: inf is not an integer (allowed: 1..65535)"),
    ("status_interval: -.inf\n", "1: status_interval: -inf is out of range 1..3600 seconds"),
    ("port: =\n", "1: port: = is not an integer (allowed: 1..65535)"),
    ("<<: {port: 1}\n", "1: <<: unknown key; " + KNOWN_KEYS),
    ("rate_limit:\n  <<: {rate: 5}\n", "2: rate_limit: <<: unknown key (allowed: rate, burst)"),
    ("rate_limit:\n  ? [rate]\n  : 5\n", "2: rate_limit: cannot read this value (while "
     "constructing a mapping found unhashable key)"),
    ('port: "1\\n2"\n', "1: port: '1\\n2' is not an integer (allowed: 1..65535)"),
    ('"log\\e[2Jlevel": 1\n', "1: 'log\\x1b[2Jlevel': unknown key; did you mean 'log_level'?"),
    ("? " + "x" * 5000 + "\n: 1\n", "1: " + "x" * 60 + "... (5000 characters): unknown key; "
     + KNOWN_KEYS),
    # share_port (issue 12, item 9) and groups a protocol uses (item 1)
    ("share_port: 1\n", "1: share_port: 1 is not a boolean (allowed: true or false)"),
    ("group: 224.0.0.251\n", "1: group: 224.0.0.251 is the mDNS group: not free for an echo "
     "responder; use an administratively scoped group (239.0.0.0/8, e.g. 239.255.10.1)"),
    ("group: 224.0.0.5\n", "1: group: 224.0.0.5 is the OSPF all-routers group (AllSPFRouters): "
     "not free for an echo responder; use an administratively scoped group (239.0.0.0/8, e.g. "
     "239.255.10.1)"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m.split(":")[1].strip()[:24] + "-" + str(i)
                                                   for i, (_, m) in enumerate(BAD)])
def test_bad_file_gives_one_exact_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}:{message}"]


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    path = write(tmp_path, "port: 0\nttl: 300\nfoo: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert [p.split(":")[1] for p in e.value.problems] == ["1", "2", "3"]


def test_empty_file(tmp_path):
    path = write(tmp_path, "# only a comment\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}: the file holds no settings; start from the shipped "
                                "etc/mcast-echo.yaml (write '{}' for all defaults)"]


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}: no such file (copy etc/mcast-echo.yaml there, or "
                                "pass -c PATH)"]


def test_directory(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path))
    assert e.value.problems == [f"{tmp_path}: is a directory, not a config file (pass -c PATH "
                                "to a YAML file)"]


def test_binary_file(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"port: 1\n\x7fELF\x00\x01")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert e.value.problems == [f"{path}:2: binary data (a NUL byte): not a YAML text file"]


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"# caf\xe9\nport: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert e.value.problems == [f"{path}:1: not UTF-8 text (byte 0xe9); save the file as UTF-8"]


@needs_another_user
def test_unreadable_file(tmp_path):
    """As the service's unprivileged user would meet it (setpriv drops root for the test)."""
    path = write(tmp_path, "port: 1\n")
    os.chmod(path, 0)
    os.chmod(tmp_path, 0o755)
    nobody = AsUser(None)
    cmd = nobody.command([sys.executable, "-m", "mcast_echo", "check-config", "-c", path])
    env = nobody.environ()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 78, done.stderr
    assert done.stderr.strip() == (f"{path}: permission denied (the daemon's user must be able "
                                   "to read it: chmod 644 the file and let it reach the "
                                   "directory)")


def test_billion_laughs_is_refused_at_once(tmp_path):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "anchors and aliases" in e.value.problems[0]


def test_check_config_exit_codes(tmp_path, capsys):
    good = write(tmp_path, "port: 5000\nrecv_buffer: 1GiB\n")
    assert main(["check-config", "-c", good]) == 0
    out, err = capsys.readouterr()
    assert "port: 5000" in out and out.endswith(f"{good}: ok\n")
    # #20.7: stdout holds the result only; the warnings are diagnostics, on stderr
    assert "warning: 224.3.29.71:5000: receive buffer: requested 1 GiB" in err
    assert "warning:" not in out and "info:" not in out
    bad = write(tmp_path, "port: 70000\n")
    assert main(["check-config", "-c", bad]) == 78
    assert capsys.readouterr().err.strip() == f"{bad}:1: port: 70000 is out of range 1..65535"


def test_config_path_from_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MCAST_ECHO_CONFIG", write(tmp_path, "port: 4242\n"))
    assert main(["check-config"]) == 0
    assert "port: 4242" in capsys.readouterr().out


# ------------------------------------------------------------------ share_port (issue 12, item 9)


def test_share_port_is_off_unless_asked_for(tmp_path):
    default = load_config(write(tmp_path, "{}\n")).listeners[0]
    assert default.share_port is False
    shared = load_config(write(tmp_path, "share_port: true\n"))
    assert shared.listeners[0].share_port is True
    assert "share_port: true" in describe(shared)


# ------------------------------------------------------------------ groups (issue 12, item 1)

IPV4_REFUSED = [group for group in REFUSED_GROUPS if ":" not in group]


def test_the_refused_groups_include_the_well_known_ones():
    wanted = ["224.0.0.0", "224.0.0.1", "224.0.0.2", "224.0.0.4", "224.0.0.5", "224.0.0.6",
              "224.0.0.9", "224.0.0.10", "224.0.0.13", "224.0.0.18", "224.0.0.22",
              "224.0.0.102", "224.0.0.107", "224.0.0.251", "224.0.0.252", "224.0.1.129"]
    assert set(wanted) <= set(IPV4_REFUSED)


@pytest.mark.parametrize("group", IPV4_REFUSED)
def test_a_group_a_protocol_uses_is_refused_with_its_name(tmp_path, group):
    path = write(tmp_path, f"port: 9999\ngroup: {group}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [
        f"{path}:2: group: {group} is {REFUSED_GROUPS[group]}: not free for an echo responder; "
        "use an administratively scoped group (239.0.0.0/8, e.g. 239.255.10.1)"]


@pytest.mark.parametrize("group", ["224.0.0.3", "224.0.0.250", "224.0.0.255", "224.0.1.128",
                                   "239.255.10.1", "224.3.29.71"])
def test_other_groups_are_allowed_link_local_ones_included(tmp_path, group):
    assert load_config(write(tmp_path, f"group: {group}\n")).listeners[0].group == group


def test_the_refused_table_answers_for_both_families():
    assert refused_group(ipaddress.ip_address("ff02::fb")) == "the mDNS group"
    assert "solicited-node" in refused_group(ipaddress.ip_address("ff02::1:ff12:3456"))
    assert refused_group(ipaddress.ip_address("ff02::3")) is None
    assert refused_group(ipaddress.ip_address("224.0.0.250")) is None


IPV6_REFUSED = [group for group in REFUSED_GROUPS if ":" in group]


@pytest.mark.parametrize("group", IPV6_REFUSED)
def test_an_ipv6_group_a_protocol_uses_is_refused_with_its_name(tmp_path, group):
    address = str(ipaddress.ip_network(group)[1234 if "/" in group else 0])
    path = write(tmp_path, f"interface: eth0\ngroup: {address}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [
        f"{path}:2: group: {address} is {REFUSED_GROUPS[group]}: not free for an echo "
        "responder; use an administratively scoped group (ff15::/16, e.g. ff15::1234)"]


# ------------------------------------------------------------------ odd YAML (issue 12, item 6)
# Every value the YAML loader can produce, at every place a value can stand, must come back as
# ConfigError lines "file:line: ..." -- never another exception.

ODD_SCALARS = [
    "2001-02-30", "2001-13-01", "2001-02-29 25:61:61", "2002-02-28t23:59:59.5-25:00",
    "9" * 4301, "-" + "9" * 5000, "+0x" + "f" * 5000, "0b" + "1" * 20000, "0" + "7" * 5000,
    "9" * 5000 + ":30", "1_" * 3000 + "1", "9" * 5000 + ".5", "1.0e99999", ".nan", "-.inf",
    "!!binary AAAA", "!!binary '@@@'", "!!set {a, b}", "!!omap [a: 1]", "!!timestamp 2001-01-01",
    "!!int x", "!!float x", "!!bool x", "!!null x", "!!str", "=", "<<", "~", "''",
    '"\\e[2J\\0\\r\\n"', "'" + "x" * 100_000 + "'", "{[1]: 2}", "{{a: 1}: 2}", "[[[[[]]]]]",
]
PLACES = {
    "document": "{x}\n",
    "key": "? {x}\n: 1\n",
    "port": "port: {x}\n",
    "group": "group: {x}\n",
    "share_port": "share_port: {x}\n",
    "allow item": "allow:\n  - 10.0.0.0/8\n  - {x}\n",
    "rate_limit rate": "rate_limit:\n  rate: {x}\n",
    "rate_limit key": "rate_limit:\n  ? {x}\n  : 1\n",
    "status_interval": "status_interval: {x}\n",
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("scalar", ODD_SCALARS, ids=[f"odd{i}" for i in range(len(ODD_SCALARS))])
def test_odd_yaml_never_escapes_the_error_path(tmp_path, scalar, place):
    path = write(tmp_path, PLACES[place].format(x=scalar))
    try:
        load_config(path)
    except ConfigError as e:
        assert e.problems
        for problem in e.problems:
            assert re.match(rf"{re.escape(path)}:\d+(:\d+)?: ", problem), problem[:200]
            assert "\n" not in problem and len(problem) < len(path) + 400, problem[:200]


@pytest.mark.parametrize("digits,says", [(100, "out of range"), (101, "too large")])
def test_long_integers_are_read_up_to_100_digits(tmp_path, digits, says):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "port: " + "9" * digits + "\n"))
    assert says in e.value.problems[0]


@pytest.mark.parametrize("text", ["2001-02-30\n", "9" * 5000 + "\n", "? " + "9" * 5000 + "\n: 1\n",
                                  "2001-02-30: 1\n"])
def test_ping_config_gives_a_message_and_2_not_a_traceback(tmp_path, text):
    path = write(tmp_path, text)
    done = subprocess.run([sys.executable, "-m", "mcast_echo", "ping", "--config", path,
                           "-c", "1", "-W", "0.1"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr[-500:]
    assert "Traceback" not in done.stderr and path in done.stderr, done.stderr[-500:]


# -------------------------------------------------------------- quoted values (issue 13, item 2)


def check_config_run(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcast_echo", "check-config", "-c", path],
                          capture_output=True, text=True, timeout=60)


def test_the_loader_keeps_that_a_scalar_was_quoted():
    import yaml

    from mcast_echo.schema import Quoted
    from mcast_echo.yamlsafe import node_value

    def value(text):
        return node_value(yaml.compose(text, Loader=yaml.SafeLoader))

    assert value("9999") == 9999 and type(value("9999")) is int
    quoted = value('"9999"')
    assert isinstance(quoted, Quoted) and quoted == "9999" and quoted.plain == 9999
    assert value("'off'").plain is False and value("!!str true").plain is True
    assert value('"~"').plain is None and value("'1.5'").plain == 1.5
    # text that is text without its quotes too stays a plain str
    for text in ('"eth0"', "'239.1.1.1'", '"4MiB"', "'2001-02-30'", '"' + "9" * 200 + '"'):
        assert type(value(text)) is str, text


QUOTED = [
    # (file text, exact message after "PATH:")
    ('port: "9999"\n', '1: port: "9999" is a string; write port: 9999'),
    ("ttl: '3'\n", '1: ttl: "3" is a string; write ttl: 3'),
    ('loopback: "true"\n', '1: loopback: "true" is a string; write loopback: true'),
    ('share_port: "no"\n', '1: share_port: "no" is a string; write share_port: no'),
    ('rate_limit: "off"\n', '1: rate_limit: "off" is a string; write rate_limit: off'),
    ("status_interval: !!str 5\n", '1: status_interval: "5" is a string; write '
     "status_interval: 5"),
    ('max_datagram: "1400"\n', '1: max_datagram: "1400" is a string; write max_datagram: 1400'),
    ('port: "70000"\n', '1: port: "70000" is a string; unquoted, 70000 is out of range '
     "1..65535"),
    ('loopback: "1"\n', '1: loopback: "1" is a string; unquoted, 1 is not a boolean (allowed: '
     "true or false)"),
    ('rate_limit:\n  rate: "100"\n', '2: rate_limit: rate: "100" is a string; write rate: 100'),
    ('rate_limit: {burst: "10"}\n', '1: rate_limit: burst: "10" is a string; write burst: 10'),
    ('ssmping:\n  port: "4321"\n', '2: ssmping: port: "4321" is a string; write port: 4321'),
    ('metrics:\n  listen: "127.0.0.1:9101"\n  probe: "yes"\n', '3: metrics: probe: "yes" is a '
     "string; write probe: yes"),
    ('listeners:\n  - group: 239.1.1.1\n    ttl: "8"\n', '3: listeners[0].ttl: "8" is a string; '
     "write ttl: 8"),
    # quoted text that is no number unquoted either: the usual message
    ('port: "abc"\n', "1: port: abc is not an integer (allowed: 1..65535)"),
]


@pytest.mark.parametrize("text,message", QUOTED, ids=[t.split(":")[0] + f"-{i}"
                                                      for i, (t, _) in enumerate(QUOTED)])
def test_a_quoted_value_is_said_to_be_a_string_and_how_to_write_it(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}:{message}"]


def test_quoted_text_where_text_is_wanted_is_fine(tmp_path):
    config = load_config(write(tmp_path, 'group: "239.1.1.1"\ninterface: "eth0"\n'
                                         'recv_buffer: "65536"\nlog_level: "debug"\n'
                                         'reply: "both"\nallow: ["10.0.0.0/8"]\n'))
    only = config.listeners[0]
    assert (only.group, only.interface, only.recv_buffer, only.reply) == ("239.1.1.1", "eth0",
                                                                         65536, "both")
    assert config.log_level == "debug"


def test_check_config_says_each_quoted_value_is_a_string(tmp_path):
    path = write(tmp_path, 'port: "9999"\nttl: "3"\nloopback: "true"\nrate_limit: "off"\n')
    done = check_config_run(path)
    assert done.returncode == 78 and not done.stdout
    assert done.stderr.splitlines() == [
        f'{path}:1: port: "9999" is a string; write port: 9999',
        f'{path}:2: ttl: "3" is a string; write ttl: 3',
        f'{path}:3: loopback: "true" is a string; write loopback: true',
        f'{path}:4: rate_limit: "off" is a string; write rate_limit: off']


# ------------------------------------------------- every problem in allow and rate_limit (item 3)

NOT_A_NETWORK = ("is not an IP network (allowed: an address or CIDR such as 10.0.0.0/8, "
                 "192.0.2.7 or 2001:db8::/32)")


def test_every_bad_item_of_allow_is_reported_on_its_own_line(tmp_path):
    path = write(tmp_path, "allow: [foo, 10.0.0.0/8, bar]\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}:1: allow: foo {NOT_A_NETWORK}",
                                f"{path}:1: allow: bar {NOT_A_NETWORK}"]


def test_every_bad_item_of_a_block_list_names_its_own_line(tmp_path):
    path = write(tmp_path, "allow:\n  - foo\n  - 10.0.0.0/8\n  - bar\n  - 10.0.0.1/8\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [
        f"{path}:2: allow: foo {NOT_A_NETWORK}",
        f"{path}:4: allow: bar {NOT_A_NETWORK}",
        f"{path}:5: allow: 10.0.0.1/8 has host bits set: write 10.0.0.0/8 for the network, or "
        "10.0.0.1/32 for the one address"]


def test_every_problem_of_rate_limit_is_reported(tmp_path):
    path = write(tmp_path, "rate_limit:\n  rate: 0\n  window: 3\n  burst: many\n  per: ip\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [
        f"{path}:2: rate_limit: rate: 0 is not a rate (allowed: 1..10000000 datagrams per "
        "second per source)",
        f"{path}:3: rate_limit: window: unknown key (allowed: rate, burst)",
        f"{path}:4: rate_limit: burst: many is not an integer (allowed: 1..10000000)",
        f"{path}:5: rate_limit: per: unknown key (allowed: rate, burst)"]


def test_every_problem_of_ssmping_and_sources_is_reported(tmp_path):
    path = write(tmp_path, "group: 232.1.1.1\nsources:\n  - 10.0.0.5\n  - sender\n"
                           "  - 127.0.0.1\nssmping:\n  port: 0\n  groups:\n    - 239.1.1.1\n"
                           "    - 10.0.0.1\n    - foo\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [
        f"{path}:4: sources: sender is not an IP address (allowed: e.g. [192.0.2.5, "
        "192.0.2.6] for an SSM group, or null)",
        f"{path}:5: sources: 127.0.0.1 is a loopback address: a source is the unicast address "
        "of a sender",
        f"{path}:7: ssmping: port: 0 is out of range 1..65535",
        f"{path}:10: ssmping: groups: 10.0.0.1 is not a multicast address (allowed: "
        "224.0.0.0/4, e.g. 224.3.29.71; use 239.0.0.0/8 for a private group)",
        f"{path}:11: ssmping: groups: foo is not a multicast group address (allowed: IPv4 "
        "224.0.0.0/4 such as 224.3.29.71, or IPv6 ff00::/8 such as ff15::1234)"]


def test_an_empty_allow_is_an_error_that_offers_null(tmp_path):
    """allow: [] would answer nobody: never what is meant; null is any source."""
    path = write(tmp_path, "listeners:\n  - group: 239.1.1.1\n    allow: []\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [
        f"{path}:3: listeners[0].allow: [] (an empty list) would answer no source at all: list "
        "the sources to answer, e.g. [10.0.0.0/8, 2001:db8::/32], or write allow: null to "
        "answer any source"]
    assert load_config(write(tmp_path, "allow: null\n")).listeners[0].allow is None


def test_check_config_names_every_bad_entry(tmp_path):
    path = write(tmp_path, "allow: [foo, 10.0.0.0/8, bar]\nrate_limit:\n  rate: -1\n"
                           "  burst: 0\n")
    done = check_config_run(path)
    assert done.returncode == 78 and not done.stdout
    assert done.stderr.splitlines() == [
        f"{path}:1: allow: foo {NOT_A_NETWORK}",
        f"{path}:1: allow: bar {NOT_A_NETWORK}",
        f"{path}:3: rate_limit: rate: -1 is not a rate (allowed: 1..10000000 datagrams per "
        "second per source)",
        f"{path}:4: rate_limit: burst: 0 is out of range 1..10000000"]


def test_check_config_empty_allow(tmp_path):
    path = write(tmp_path, "allow: []\n")
    done = check_config_run(path)
    assert done.returncode == 78
    assert done.stderr.splitlines() == [
        f"{path}:1: allow: [] (an empty list) would answer no source at all: list the sources "
        "to answer, e.g. [10.0.0.0/8, 2001:db8::/32], or write allow: null to answer any "
        "source"]


# ------------------------------------------------------------------ host bits in allow (item 4)


@pytest.mark.parametrize("written,network,host", [
    ("10.0.0.1/8", "10.0.0.0/8", "10.0.0.1/32"),
    ("192.0.2.77/24", "192.0.2.0/24", "192.0.2.77/32"),
    ("10.1.2.3/255.255.0.0", "10.1.0.0/16", "10.1.2.3/32"),
    ("'2001:db8::1/32'", "2001:db8::/32", "2001:db8::1/128"),
    ("'2001:db8:0:1::5/64'", "2001:db8:0:1::/64", "2001:db8:0:1::5/128"),
])
def test_host_bits_in_allow_are_an_error_offering_both_meanings(tmp_path, written, network,
                                                                host):
    path = write(tmp_path, f"allow: [{written}, 'fd00::/8']\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    shown = written.strip("'")
    assert e.value.problems == [f"{path}:1: allow: {shown} has host bits set: write {network} "
                                f"for the network, or {host} for the one address"]


@pytest.mark.parametrize("written,network", [
    ("10.0.0.0/8", "10.0.0.0/8"), ("10.0.0.1", "10.0.0.1/32"), ("10.0.0.1/32", "10.0.0.1/32"),
    ("'2001:db8::/32'", "2001:db8::/32"), ("'2001:db8::1'", "2001:db8::1/128"),
    ("0.0.0.0/0", "0.0.0.0/0"),
])
def test_networks_and_addresses_without_host_bits_are_taken(tmp_path, written, network):
    config = load_config(write(tmp_path, f"allow: [{written}, 10.9.0.0/16, 'fd00::/8']\n"))
    assert config.listeners[0].allow[0] == ipaddress.ip_network(network)


def test_check_config_host_bits_of_both_families(tmp_path):
    path = write(tmp_path, "allow:\n  - 10.0.0.1/8\n  - '2001:db8::1/32'\n")
    done = check_config_run(path)
    assert done.returncode == 78 and not done.stdout
    assert done.stderr.splitlines() == [
        f"{path}:2: allow: 10.0.0.1/8 has host bits set: write 10.0.0.0/8 for the network, or "
        "10.0.0.1/32 for the one address",
        f"{path}:3: allow: 2001:db8::1/32 has host bits set: write 2001:db8::/32 for the "
        "network, or 2001:db8::1/128 for the one address"]


# ------------------------------------------- each command's advice for an unreadable file (item 6)

FILE_ADVICE = {
    ("daemon", "missing"): "no such file (copy etc/mcast-echo.yaml there, or pass -c PATH)",
    ("daemon", "directory"): "is a directory, not a config file (pass -c PATH to a YAML file)",
    ("daemon", "fifo"): "not a regular file (a FIFO, socket or device): point -c at a YAML "
                        "file",
    ("daemon", "unreadable"): "permission denied (the daemon's user must be able to read it: "
                              "chmod 644 the file and let it reach the directory)",
    ("ping", "missing"): "no such file (pass --config PATH, or name the group: mcast-echo ping "
                         "GROUP[:PORT])",
    ("ping", "directory"): "is a directory (pass --config PATH to a YAML file)",
    ("ping", "fifo"): "not a regular file (a FIFO, socket or device): pass --config PATH to a "
                      "YAML file",
    ("ping", "unreadable"): "permission denied: ping reads it as you (make it readable, pass "
                            "--config PATH to a copy, or name the group: mcast-echo ping GROUP)",
}


def unreadable_as(tmp_path: Path, kind: str, monkeypatch) -> str:
    """A path that is *kind*: missing, a directory, a FIFO, or (for root too) unreadable."""
    path = tmp_path / "mcast-echo.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "unreadable":
        path.write_text("port: 1\n")

        def refuse(*_args, **_kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("mcast_echo.yamlsafe.os.open", refuse)
    return str(path)


@pytest.mark.parametrize("command,kind", list(FILE_ADVICE), ids="-".join)
def test_each_command_gets_its_own_advice_for_a_file_it_cannot_read(tmp_path, monkeypatch,
                                                                   command, kind):
    path = unreadable_as(tmp_path, kind, monkeypatch)
    advice = PING_ADVICE if command == "ping" else DAEMON_ADVICE
    with pytest.raises(ConfigError) as e:
        load_config(path, advice=advice)
    assert e.value.problems == [f"{path}: {FILE_ADVICE[command, kind]}"]


def test_the_daemons_advice_is_the_default(tmp_path):
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}: {FILE_ADVICE['daemon', 'missing']}"]


def test_ping_advice_never_names_dash_c_or_the_daemon():
    for text in vars(PING_ADVICE).values():
        assert "-c " not in text and "daemon" not in text, text


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_check_config_gives_the_daemons_advice(tmp_path, monkeypatch, kind):
    path = unreadable_as(tmp_path, kind, monkeypatch)
    done = check_config_run(path)
    assert done.returncode == 78 and not done.stdout
    assert done.stderr.splitlines() == [f"{path}: {FILE_ADVICE['daemon', kind]}"]


# ---------------------------------------- interfaces this host does not have (issue 13, item 5)

HOST_INTERFACES = [  # (pair, addresses): both ends of each pair stay in the host
    (("eth0", "eth10"), ("10.88.0.1/24", "fd00:88::1/64")),
    (("eth2", "eth1"), ("10.89.0.1/24",)),
]


@pytest.fixture(scope="module")
def cfg_host():
    """A host with eth0 (10.88.0.1, fd00:88::1), eth1 (10.89.0.1), eth2 and eth10 up and
    multicast-capable, no IPv6 link-local addresses (so every listing is exact), and lo."""
    with Host("cfgif") as host:
        for (name, peer), addresses in HOST_INTERFACES:
            host.run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer])
            for one in (name, peer):
                host.run(["ip", "link", "set", one, "addrgenmode", "none"])
                host.run(["ip", "link", "set", one, "up"])
            for address in addresses:
                host.run(["ip", "addr", "add", address, "dev", name, *(
                    ["nodad"] if ":" in address else [])])
        yield host


def check_config_on(host: Host, path: str) -> subprocess.CompletedProcess:
    return host.run([sys.executable, "-m", "mcast_echo", "check-config", "-c", path],
                    check=False, timeout=60)


def warnings_of(done: subprocess.CompletedProcess) -> list[str]:
    assert "warning: " not in done.stdout  # #20.7: on stderr, stdout is the result
    return [line for line in done.stderr.splitlines() if line.startswith("warning: ")]


HERE = "up and multicast-capable here: eth0, eth1, eth2, eth10"


def test_check_config_warns_of_an_interface_this_host_lacks_and_exits_0(tmp_path, cfg_host):
    path = write(tmp_path, "interface: nosuch0\nlisteners:\n  - group: 239.1.1.1\n"
                           "  - group: 239.1.1.2\n  - {group: 239.1.1.3, interface: eth1}\n"
                           "  - {group: ff15::1, interface: eht0, port: 5000}\n")
    done = check_config_on(cfg_host, path)
    assert done.returncode == 0, done.stderr
    assert warnings_of(done) == [
        f"warning: 239.1.1.1:9999, 239.1.1.2:9999: interface nosuch0 does not exist on this "
        f"host now; the daemon would wait for it and join when it appears ({HERE})",
        f"warning: [ff15::1]:5000: interface eht0 does not exist on this host now; the daemon "
        f"would wait for it and join when it appears ({HERE})"]
    assert done.stdout.splitlines()[-1] == f"{path}: ok"


def test_check_config_warns_of_an_address_this_host_lacks(tmp_path, cfg_host):
    path = write(tmp_path, "listeners:\n  - {group: 239.1.1.1, interface: 10.88.0.9}\n"
                           "  - {group: ff15::1, interface: 'fd00:88::9'}\n")
    done = check_config_on(cfg_host, path)
    assert done.returncode == 0, done.stderr
    assert warnings_of(done) == [
        "warning: 239.1.1.1:9999: interface 10.88.0.9 is not an address of this host now; the "
        "daemon would wait for an interface to have it and join then (IPv4 addresses of the up "
        "multicast interfaces here: 10.88.0.1 on eth0, 10.89.0.1 on eth2)",
        "warning: [ff15::1]:9999: interface fd00:88::9 is not an address of this host now; the "
        "daemon would wait for an interface to have it and join then (IPv6 addresses of the up "
        "multicast interfaces here: fd00:88::1 on eth0)"]


def test_what_this_host_has_gives_no_warning(tmp_path, cfg_host):
    path = write(tmp_path, "listeners:\n  - {group: 239.1.1.1, interface: eth0}\n"
                           "  - {group: 239.1.1.2, interface: 10.89.0.1}\n"
                           "  - {group: ff15::1, interface: 'fd00:88::1'}\n"
                           "  - {group: 239.1.1.3, interface: lo}\n"
                           "  - {group: 239.1.1.4, interface: all}\n"
                           "  - {group: 239.1.1.5}\n")
    done = check_config_on(cfg_host, path)
    assert done.returncode == 0 and warnings_of(done) == [], done.stdout


def test_a_host_without_multicast_interfaces_says_so(tmp_path):
    path = write(tmp_path, "interface: eth0\ngroup: 239.1.1.1\n")
    with Host("cfgbare") as bare:
        done = check_config_on(bare, path)
    assert done.returncode == 0, done.stderr
    assert warnings_of(done) == [
        "warning: 239.1.1.1:9999: interface eth0 does not exist on this host now; the daemon "
        "would wait for it and join when it appears (no interface here is up and "
        "multicast-capable, lo aside)"]


def test_interface_warnings_of_the_tests_own_namespace(tmp_path):
    from mcast_echo.hostcheck import interface_warnings

    assert interface_warnings(load_config(write(tmp_path, "interface: lo\n"))) == []
    assert interface_warnings(load_config(write(tmp_path, "interface: 127.0.0.1\n"))) == []
    [warning] = interface_warnings(load_config(write(tmp_path, "interface: nosuch9\n")))
    assert warning.startswith("warning: 224.3.29.71:9999: interface nosuch9 does not exist on "
                              "this host now; the daemon would wait for it")


# ------------------------------------------------------------------ the docs say it (items 2-5)


@pytest.mark.parametrize("doc", ["etc/mcast-echo.yaml", "packaging/man/mcast-echo.yaml.5",
                                 "README.md"])
def test_docs_say_what_empty_lists_host_bits_quotes_and_missing_interfaces_mean(doc):
    text = (REPO / doc).read_text().replace("\\-", "-").replace("\\&", "").replace("\\(dq", '"')
    if doc == "README.md":
        text = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    text = " ".join(text.replace("# ", "").replace(".BR ", "").replace(".B ", "").split())
    for fact in ("allow: []", "10.0.0.1/8", "10.0.0.1/32", "host bits", "sources: []",
                 "check-config", "warn"):
        assert fact in text, f"{doc}: {fact}"
    assert "without quotes" in text or "is a string" in text, doc


def test_describe_keeps_the_quotes_that_keep_text_text(tmp_path):
    """An interface named "123" or "null" is text only in quotes: check-config prints it so,
    and its output reads back to the same settings."""
    for name in ("123", "null", "true"):
        config = load_config(write(tmp_path, f'interface: "{name}"\n'))
        assert config.listeners[0].interface == name
        assert f'interface: "{name}"' in describe(config)
        again = load_config(write(tmp_path, "\n".join(describe(config)) + "\n"))
        assert again.listeners == config.listeners


def test_ssmping_groups_are_capped_with_file_line_and_the_fix(tmp_path):
    """An RFC 6450 Init's work is bounded by an index (#18.3), and the groups by a cap that
    allows at least 1,024: past it, the error names the key's line and what to do."""
    from mcast_echo.schema import MAX_SSMPING_GROUPS

    def groups(count: int) -> str:
        return "".join(f"    - 239.9.{n // 250}.{n % 250 + 1}\n" for n in range(count))

    assert MAX_SSMPING_GROUPS >= 1024
    config = load_config(write(tmp_path, f"group: 239.1.1.1\nssmping:\n  groups:\n"
                                         f"{groups(MAX_SSMPING_GROUPS)}"))
    assert len(config.ssmping.groups) == MAX_SSMPING_GROUPS
    path = write(tmp_path, f"group: 239.1.1.1\nssmping:\n  groups:\n"
                           f"{groups(MAX_SSMPING_GROUPS + 1)}")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [
        f"{path}:3: ssmping: groups: {MAX_SSMPING_GROUPS + 1:,} groups: at most "
        f"{MAX_SSMPING_GROUPS:,}; list the groups clients ask for (an RFC 6450 client is offered "
        "the first one inside its prefix), or run a second daemon on another ssmping port"]


def test_group_echoes_with_ttl_1_are_warned_of_in_check_config_and_at_start(tmp_path):
    """#20.3: reply: group or both with ttl 1 -- nobody beyond a router hears the group echoes;
    check-config (on stderr) and serve (in its log) say so; a link-local group is not warned."""
    path = write(tmp_path, "interface: lo\nlisteners:\n  - {group: 239.1.1.1, reply: both}\n"
                           "  - {group: 239.1.1.2, reply: group, ttl: 4}\n"
                           "  - {group: 224.0.0.99, reply: group}\n"
                           "  - {group: 239.1.1.3}\n")
    done = check_config_run(path)
    assert done.returncode == 0, done.stderr
    warning = ("239.1.1.1:9999: reply: both with ttl: 1: its echoes to the group do not leave "
               "this link (a router forwards TTL 2 or more); set ttl: to 1 + the routers "
               "between here and the probers to reach them")
    assert [line for line in done.stderr.splitlines() if "reply:" in line] == [
        f"warning: {warning}"]
    assert "reply:" not in "".join(line for line in done.stdout.splitlines()
                                   if line.startswith("warning"))
    daemon = subprocess.Popen([sys.executable, "-m", "mcast_echo", "serve", "-c", path],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        lines = []
        while time.monotonic() < deadline and not any("ready:" in line for line in lines):
            line = daemon.stderr.readline()
            if not line:
                break
            lines.append(line)
        assert any(f"WARNING {warning}" in " ".join(line.split()) for line in lines), lines
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_ssmping_groups_asmping_cannot_ask_for_are_warned_of(tmp_path):
    """#20.9: asmping asks only for a group ending in .234 or ::4321:1234; any other ssmping
    group is valid (RFC 6450 clients ask for it) but said so, exit 0."""
    path = write(tmp_path, "group: 239.1.1.1\nssmping: {groups: [239.1.1.1, 232.43.211.234, "
                           "239.1.2.234, 'ff3e::4321:1234', 'ff15::1']}\n")
    done = check_config_run(path)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if "asmping" in line] == [
        "warning: ssmping: groups: 239.1.1.1, ff15::1: asmping can ask only for a group ending "
        "in .234 (IPv4) or ::4321:1234 (IPv6), so only RFC 6450 clients (mcast-echo ping "
        "--protocol rfc6450) get replies to them"]
    quiet = write(tmp_path, "group: 239.1.1.1\nssmping: {}\n")
    assert "asmping" not in check_config_run(quiet).stderr


# ---------------------------------------------------------------- #20.13: the smaller items

def test_interface_off_says_there_is_no_off(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "interface: off\n"))
    assert e.value.problems[0].startswith(
        f"{tmp_path}/mcast-echo.yaml:1: interface: off, no or false is a boolean in YAML, not "
        "an interface: write interface: null for the route to the group (there is no off;")


def test_a_listen_address_without_its_address_says_what_to_write(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, 'metrics: {listen: ":9101"}\n'))
    assert e.value.problems == [
        f'{tmp_path}/mcast-echo.yaml:1: metrics: listen: :9101 has no address before the port: '
        'write "127.0.0.1:9101" for this host only, or "0.0.0.0:9101" for every IPv4 address']


def test_problems_come_in_the_order_of_their_lines(tmp_path):
    path = write(tmp_path, "ttl: 999\nlisteners:\n  - {group: 1.2.3.4}\ngroup: x\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, {"interface": "bad name"})
    lines = [problem.split(":")[1] for problem in e.value.problems]
    assert lines == [" --interface", "1", "3", "4"], e.value.problems


def test_a_whole_float_is_shown_as_written(tmp_path):
    config = load_config(write(tmp_path, "status_interval: 5.0\n"))
    assert "status_interval: 5" in describe(config)
    config = load_config(write(tmp_path, "status_interval: 2.5\n"))
    assert "status_interval: 2.5" in describe(config)
