"""The config of issue 9: `listeners:`, IPv6 and SSM groups, sources, reply, interface all.

Each rule is proven good and bad through load_config, with the exact line an operator reads
(`file:line: listeners[i].key: ...`), and the front door (`mcast-echo check-config`: exit 78,
one line per problem) at the end.
"""

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from mcast_echo.addresses import is_link_scope_group, is_ssm_group
from mcast_echo.config import ConfigError, describe, load_config
from mcast_echo.schema import MAX_LISTENERS, Listener, RateLimit

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "etc" / "mcast-echo.yaml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mcast-echo.yaml"
    path.write_text(text)
    return str(path)


def problems(tmp_path: Path, text: str, overrides=None) -> list[str]:
    """The problems of *text*, with the path cut off each line ("3: key: ...")."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    assert all(line.startswith(f"{path}:") for line in e.value.problems), e.value.problems
    return [line[len(path) + 1:] for line in e.value.problems]


# ------------------------------------------------------------------ good files


def test_listeners_take_the_top_level_keys_as_defaults(tmp_path):
    config = load_config(write(tmp_path, """
ttl: 4
port: 6000
allow: [10.0.0.0/8, 2001:db8::/32]
rate_limit: {rate: 5, burst: 10}
log_level: debug
listeners:
  - group: 239.1.1.1
    port: 5000
    interface: eth0
  - group: ff15::1234
    interface: eth0
    ttl: 9
    rate_limit: off
  - group: 232.1.1.1
    sources: [10.0.0.6, 10.0.0.5]
    reply: both
"""))
    first, second, third = config.listeners
    assert (first.group, first.port, first.interface, first.ttl) == ("239.1.1.1", 5000, "eth0", 4)
    assert (second.group, second.port, second.ttl, second.rate_limit) == ("ff15::1234", 6000, 9,
                                                                          None)
    assert first.rate_limit == third.rate_limit == RateLimit(5.0, 10)
    assert first.allow == second.allow == (ipaddress.ip_network("10.0.0.0/8"),
                                           ipaddress.ip_network("2001:db8::/32"))
    assert (third.sources, third.reply, third.ssm) == (("10.0.0.5", "10.0.0.6"), "both", True)
    assert (first.ipv6, second.ipv6, second.ssm, second.link_scope) == (False, True, False, False)
    assert config.log_level == "debug"


def test_without_listeners_the_top_level_keys_are_the_one_listener(tmp_path):
    config = load_config(write(tmp_path, "group: 239.9.9.9\nreply: group\n"))
    assert config.listeners == (Listener(group="239.9.9.9", reply="group"),)


def test_every_listener_key_can_be_set_per_listener(tmp_path):
    text = """listeners:
  - group: 232.7.7.7
    port: 5001
    share_port: true
    interface: 2001:db8::2
    sources: [192.0.2.9]
    reply: group
    recv_buffer: 4MiB
    send_buffer: 64KiB
    ttl: 7
    loopback: false
    max_datagram: 1400
    allow: [192.0.2.0/24]
    rate_limit: {rate: 9, burst: 9}
"""
    only = load_config(write(tmp_path, text)).listeners[0]
    assert only == Listener("232.7.7.7", 5001, "2001:db8::2", ("192.0.2.9",), "group", 4 << 20,
                            64 << 10, 7, False, 1400, (ipaddress.ip_network("192.0.2.0/24"),),
                            RateLimit(9.0, 9), True)


@pytest.mark.parametrize("written,stored", [
    ("239.1.1.1", "239.1.1.1"), ("FF15:0:0::1234", "ff15::1234"), ("ff05::1:4", "ff05::1:4"),
    ("'ff0e:0000::0001'", "ff0e::1"), ("224.0.0.250", "224.0.0.250"),
])
def test_groups_of_both_families_are_stored_in_normal_form(tmp_path, written, stored):
    config = load_config(write(tmp_path, f"group: {written}\ninterface: eth0\n"))
    assert config.listeners[0].group == stored


@pytest.mark.parametrize("group,ssm", [
    ("232.0.0.1", True), ("232.255.255.255", True), ("231.255.255.255", False),
    ("233.0.0.1", False), ("ff3e::1234", True), ("ff35::8000:1", True), ("ff32::1", True),
    ("ff3e:0:ffff::1", True), ("ff3e:40:2001:db8::1", False), ("ff1e::1", False),
    ("ff7e:140:2001:db8::1", False), ("ff2e::1", False),
])
def test_the_ssm_ranges_are_232_8_and_ff3x_32(group, ssm):
    """RFC 4607: 232.0.0.0/8 and FF3x::/32; an ff3x: group with a unicast prefix (RFC 3306,
    prefix length > 0) is any-source."""
    assert is_ssm_group(ipaddress.ip_address(group)) is ssm
    assert is_ssm_group(group) is ssm  # the text will do (ping passes it)


@pytest.mark.parametrize("group,link", [
    ("ff01::1234", True), ("ff02::4242", True), ("ff12::1", True), ("ff32::8000:1", True),
    ("ff05::1", False), ("ff15::1234", False), ("ff3e::1", False), ("239.1.1.1", False),
    ("224.0.0.250", False), ("fe80::1", False),
])
def test_link_scope_groups_are_ipv6_scopes_1_and_2(group, link):
    assert is_link_scope_group(group) is link
    assert is_link_scope_group(ipaddress.ip_address(group)) is link
    if ipaddress.ip_address(group).is_multicast:
        assert Listener(group=group).link_scope is link


@pytest.mark.parametrize("value,stored", [
    ("eth0", "eth0"), ("eth0:1", "eth0:1"), ("all", "all"), ("10.1.2.3", "10.1.2.3"),
    ("2001:db8::2", "2001:db8::2"), ("'2001:DB8:0::2'", "2001:db8::2"), ("fe80::1", "fe80::1"),
    ("2001:1:2:3:4:5:6:7", "2001:1:2:3:4:5:6:7"), ("null", None),
])
def test_interface_is_a_name_an_address_of_either_family_all_or_null(tmp_path, value, stored):
    config = load_config(write(tmp_path, f"interface: {value}\n"))
    assert config.listeners[0].interface == stored


def test_sources_are_sorted_normalized_text(tmp_path):
    config = load_config(write(tmp_path, "group: ff35::1\nsources: ['2001:DB8::9', "
                                         "2001:db8::10, fe80::1]\n"))
    assert config.listeners[0].sources == ("2001:db8::9", "2001:db8::10", "fe80::1")


@pytest.mark.parametrize("mode", ["unicast", "group", "both"])
def test_reply_modes(tmp_path, mode):
    assert load_config(write(tmp_path, f"reply: {mode}\n")).listeners[0].reply == mode


def test_max_datagram_goes_to_65527_for_ipv6_groups_only(tmp_path):
    config = load_config(write(tmp_path, "max_datagram: 65507\nlisteners:\n"
                                         "  - group: 239.1.1.1\n"
                                         "  - {group: ff15::1, max_datagram: 65527}\n"))
    assert [one.max_datagram for one in config.listeners] == [65507, 65527]


def test_allow_of_both_families_serves_listeners_of_both(tmp_path):
    config = load_config(write(tmp_path, "allow: [10.0.0.0/8, 2001:db8::/32]\nlisteners:\n"
                                         "  - {group: 239.1.1.1}\n  - {group: ff15::1}\n"))
    assert len(config.listeners) == 2


def test_same_group_on_two_ports_and_two_groups_on_one_port(tmp_path):
    config = load_config(write(tmp_path, "listeners:\n  - {group: 239.1.1.1, port: 1}\n"
                                         "  - {group: 239.1.1.1, port: 2}\n"
                                         "  - {group: 239.1.1.2, port: 1}\n"))
    assert [(one.group, one.port) for one in config.listeners] == [
        ("239.1.1.1", 1), ("239.1.1.1", 2), ("239.1.1.2", 1)]


def test_link_scope_group_on_a_named_interface(tmp_path):
    config = load_config(write(tmp_path, "group: ff02::4242\ninterface: eth1\n"))
    assert config.listeners[0].link_scope and config.listeners[0].interface == "eth1"


def test_the_largest_number_of_listeners_loads(tmp_path):
    items = "".join(f"  - {{group: 239.1.{i // 250}.{i % 250 + 1}}}\n"
                    for i in range(MAX_LISTENERS))
    assert len(load_config(write(tmp_path, "listeners:\n" + items)).listeners) == MAX_LISTENERS


# ------------------------------------------------------------------ the command-line override


def test_interface_override_applies_to_every_listener(tmp_path):
    """`serve --interface lo` (make run) wins over every listener's interface, and so makes
    a link-scope group without one valid."""
    path = write(tmp_path, "interface: eth0\nlisteners:\n  - {group: 239.1.1.1}\n"
                           "  - {group: ff02::4242, interface: all}\n"
                           "  - {group: ff15::1, interface: eth3}\n")
    config = load_config(path, {"interface": "lo"})
    assert [one.interface for one in config.listeners] == ["lo", "lo", "lo"]


def test_interface_override_all_is_checked_like_the_file(tmp_path):
    assert problems(tmp_path, "group: ff02::4242\ninterface: eth0\n", {"interface": "all"}) == [
        "2: interface: all, but ff02::4242 is a link-scope group: a link-scope group needs a "
        "named interface (e.g. interface: eth0) (set by --interface on the command line)"]


def test_the_shipped_file_runs_with_make_runs_override():
    config = load_config(str(SHIPPED), {"interface": "lo"})
    assert [(one.group, one.port, one.interface) for one in config.listeners] == [
        ("224.3.29.71", 9999, "lo")]


# ------------------------------------------------------------------ bad files, exact lines

SSM = "(232.0.0.0/8, ff3x::/32)"
LINK = "a link-scope group needs a named interface (e.g. interface: eth0)"
BAD = [
    # the list itself
    ("listeners-empty", "port: 1\nlisteners: []\n",
     "2: listeners: an empty list: list at least one listener (- {group: 239.1.1.1, port: "
     "5000}), or leave the key out for one listener from the top-level keys"),
    ("listeners-null", "listeners:\n",
     "1: listeners: null is not a list of listeners (allowed: a list of mappings such as "
     "- {group: 239.1.1.1, port: 5000}), or leave the key out for one listener from the "
     "top-level keys"),
    ("listeners-mapping", "listeners:\n  group: 239.1.1.1\n",
     "1: listeners: a mapping is not a list of listeners (allowed: a list of mappings such as "
     "- {group: 239.1.1.1, port: 5000}), or leave the key out for one listener from the "
     "top-level keys"),
    ("listener-scalar", "listeners:\n  - group: 239.1.1.1\n  - 239.1.1.2\n",
     "3: listeners[1]: 239.1.1.2 is not a listener (allowed: a mapping of listener keys such "
     "as {group: 239.1.1.1, port: 5000})"),
    ("listener-typo", "listeners:\n  - group: 239.1.1.1\n    prot: 5\n",
     "3: listeners[0].prot: unknown key; did you mean 'port'?"),
    ("listener-unknown", "listeners:\n  - colour: blue\n",
     "2: listeners[0].colour: unknown key; known keys: group, port, share_port, interface, "
     "sources, reply, recv_buffer, send_buffer, ttl, loopback, max_datagram, allow, rate_limit"),
    ("listener-log_level", "listeners:\n  - group: 239.1.1.1\n    log_level: debug\n",
     "3: listeners[0].log_level: only at the top level (it is the daemon's, not a listener's): "
     "move it out of listeners"),
    ("listener-status_interval", "listeners:\n  - {group: 239.1.1.1, status_interval: 2}\n",
     "2: listeners[0].status_interval: only at the top level (it is the daemon's, not a "
     "listener's): move it out of listeners"),
    ("listener-nested", "listeners:\n  - listeners: [{port: 1}]\n",
     "2: listeners[0].listeners: listeners do not nest: list each one at the top level"),
    ("listener-duplicate-key", "listeners:\n  - group: 239.1.1.1\n    port: 1\n    port: 2\n",
     "4: listeners[0].port: duplicate key (first set on line 3); keep one"),
    ("listener-bad-value", "listeners:\n  - group: 239.1.1.1\n  - group: 239.1.1.2\n"
     "    ttl: 300\n", "4: listeners[1].ttl: 300 is out of range 0..255"),
    ("listener-bad-item", "listeners:\n  - group: 239.1.1.1\n    allow:\n      - 10.0.0.0/8\n"
     "      - nonsense\n", "5: listeners[0].allow: nonsense is not an IP network (allowed: an "
     "address or CIDR such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)"),
    # one listener per group and port
    ("same-group-and-port", "listeners:\n  - group: 239.1.1.1\n    interface: eth0\n"
     "  - group: 239.1.1.2\n  - group: 239.1.1.1\n    interface: eth1\n",
     "5: listeners[2]: group 239.1.1.1 port 9999 is already listeners[0] (line 2): one "
     "listener per group and port; use interface: all, or another port"),
    ("same-ipv6-group-spelled-twice", "port: 7\nlisteners:\n  - {group: ff15::1234}\n"
     "  - {group: 'FF15:0::1234', port: 7}\n",
     "4: listeners[1]: group ff15::1234 port 7 is already listeners[0] (line 3): one listener "
     "per group and port; use interface: all, or another port"),
    # group
    ("group-not-an-address", "group: ff15::xyz\n", "1: group: ff15::xyz is not a multicast "
     "group address (allowed: IPv4 224.0.0.0/4 such as 224.3.29.71, or IPv6 ff00::/8 such as "
     "ff15::1234)"),
    ("group-ipv6-unicast", "listeners:\n  - group: 2001:db8::1\n", "2: listeners[0].group: "
     "2001:db8::1 is not a multicast address (allowed: ff00::/8, e.g. ff15::1234; use "
     "ff15::/16 for a private group)"),
    ("group-ipv6-refused", "listeners:\n  - {group: ff02::fb, interface: eth0}\n",
     "2: listeners[0].group: ff02::fb is the mDNS group: not free for an echo responder; use an "
     "administratively scoped group (ff15::/16, e.g. ff15::1234)"),
    ("group-solicited-node", "group: ff02::1:ff00:1234\ninterface: eth0\n",
     "1: group: ff02::1:ff00:1234 is a solicited-node group (IPv6 neighbor discovery): not "
     "free for an echo responder; use an administratively scoped group (ff15::/16, e.g. "
     "ff15::1234)"),
    ("group-scope-0", "group: ff10::1\n", "1: group: ff10::1 has scope 0, which is reserved "
     "(RFC 7346); use a scope from 1 to e, e.g. ff15::1234"),
    ("group-scope-f", "group: ff1f::1\n", "1: group: ff1f::1 has scope f, which is reserved "
     "(RFC 7346); use a scope from 1 to e, e.g. ff15::1234"),
    ("group-zone", "group: ff02::4242%eth0\n", "1: group: ff02::4242%eth0: write the group "
     "without %eth0 and the interface apart (interface: eth0)"),
    ("group-ipv4-mapped", "group: ::ffff:239.1.1.1\n", "1: group: ::ffff:239.1.1.1 is an "
     "IPv4-mapped IPv6 address, not a multicast group (write 239.1.1.1) (allowed: ff00::/8, "
     "e.g. ff15::1234; use ff15::/16 for a private group)"),
    # interface
    ("interface-ipv6-bad", "interface: 2001:db8::g\n",
     "1: interface: 2001:db8::g is not a valid IPv6 address"),
    ("interface-zone", "interface: fe80::1%eth0\n",
     "1: interface: fe80::1%eth0: name the interface instead (interface: eth0)"),
    ("interface-ALL", "interface: [all]\n", "1: interface: a list is not an interface (allowed: "
     "a name such as eth0, an IPv4 or IPv6 address of this host, all for every multicast "
     "interface, or null for the route to the group)"),
    # link scope
    ("link-scope-null", "group: ff02::4242\n", f"1: interface: null, but ff02::4242 is a "
     f"link-scope group: {LINK}"),
    ("link-scope-all", "listeners:\n  - group: ff12::4242\n    interface: all\n",
     f"3: listeners[0].interface: all, but ff12::4242 is a link-scope group: {LINK}"),
    ("link-scope-inherited", "interface: all\nlisteners:\n  - group: 239.1.1.1\n"
     "  - group: ff01::4242\n", f"4: listeners[1].interface: all, but ff01::4242 is a "
     f"link-scope group: {LINK} (the top-level interface on line 1 applies here; set another "
     "in this listener)"),
    ("link-scope-default", "listeners:\n  - port: 5\n    group: ff32::4242\n"
     "    sources: ['fe80::1']\n", f"3: listeners[0].interface: null, but ff32::4242 is a "
     f"link-scope group: {LINK}"),
    # sources and SSM
    ("ssm-without-sources", "group: 232.1.1.1\n", f"1: group: 232.1.1.1 is a source-specific "
     f"group {SSM}: list the senders to join in sources, e.g. sources: [192.0.2.5], or use an "
     "any-source group"),
    ("ssm6-without-sources", "listeners:\n  - port: 1\n    group: ff3e::8000:1\n",
     f"3: listeners[0].group: ff3e::8000:1 is a source-specific group {SSM}: list the senders "
     "to join in sources, e.g. sources: [192.0.2.5], or use an any-source group"),
    ("sources-on-any-source", "listeners:\n  - group: 239.1.1.1\n    sources: [10.0.0.5]\n",
     f"3: listeners[0].sources: [10.0.0.5] on 239.1.1.1, an any-source group: sources are only "
     f"for source-specific groups {SSM}; remove them (sources: null)"),
    ("sources-on-unicast-prefix-group", "group: ff3e:40:2001:db8::1\nsources: [2001:db8::5]\n",
     f"2: sources: [2001:db8::5] on ff3e:40:2001:db8::1, an any-source group: sources are only "
     f"for source-specific groups {SSM}; remove them (sources: null)"),
    ("sources-inherited", "sources: [10.0.0.5]\nlisteners:\n  - group: 232.1.1.1\n"
     "  - group: 239.1.1.1\n", f"4: listeners[1].sources: [10.0.0.5] on 239.1.1.1, an "
     f"any-source group: sources are only for source-specific groups {SSM}; remove them "
     "(sources: null) (the top-level sources on line 1 applies here; set another in this "
     "listener)"),
    ("sources-other-family", "listeners:\n  - group: ff35::1\n    sources:\n"
     "      - 10.0.0.5\n", "4: listeners[0].sources: 10.0.0.5 is not IPv6 like the group "
     "ff35::1: list sources of the group's family"),
    ("sources-ipv6-for-ipv4", "group: 232.1.1.1\nsources: ['2001:db8::5']\n",
     "2: sources: 2001:db8::5 is not IPv4 like the group 232.1.1.1: list sources of the "
     "group's family"),
    ("sources-mixed", "group: 232.1.1.1\nsources:\n  - 10.0.0.5\n  - 2001:db8::5\n",
     "4: sources: 2001:db8::5 is IPv6 but 10.0.0.5 is IPv4: the sources of a listener are of "
     "one family, the group's"),
    ("sources-multicast", "group: 232.1.1.1\nsources: [232.1.1.2]\n", "2: sources: 232.1.1.2 "
     "is a multicast address: a source is the unicast address of a sender"),
    ("sources-unspecified", "group: ff35::1\nsources: ['::']\n", "2: sources: :: is "
     "unspecified: a source is the unicast address of a sender"),
    ("sources-this-network", "group: 232.1.1.1\nsources: [0.1.2.3]\n", "2: sources: 0.1.2.3 "
     "is unspecified: a source is the unicast address of a sender"),
    ("sources-loopback", "group: 232.1.1.1\nsources: [127.0.0.1]\n", "2: sources: 127.0.0.1 "
     "is a loopback address: a source is the unicast address of a sender"),
    ("sources-loopback6", "group: ff35::1\nsources: ['::1']\n", "2: sources: ::1 is a "
     "loopback address: a source is the unicast address of a sender"),
    ("sources-broadcast", "group: 232.1.1.1\nsources: [255.255.255.255]\n",
     "2: sources: 255.255.255.255 is the broadcast address: a source is the unicast address "
     "of a sender"),
    ("sources-mapped", "group: ff35::1\nsources: ['::ffff:10.0.0.5']\n", "2: sources: "
     "::ffff:10.0.0.5 is an IPv4-mapped address (write 10.0.0.5): a source is the unicast "
     "address of a sender"),
    ("sources-duplicate", "group: 232.1.1.1\nsources:\n  - 10.0.0.6\n  - 10.0.0.5\n"
     "  - 10.0.0.6\n", "5: sources: 10.0.0.6 is listed twice (items 1 and 3); keep one"),
    ("sources-duplicate-spelling", "group: ff35::1\nsources: ['2001:db8::5', "
     "'2001:DB8:0::5']\n", "2: sources: 2001:db8::5 is listed twice (items 1 and 2); keep one"),
    ("sources-empty", "group: 232.1.1.1\nsources: []\n", "2: sources: [] (an empty list) would "
     "join no sender: list the senders, e.g. [192.0.2.5, 192.0.2.6], or write sources: null for "
     "an any-source group"),
    ("sources-scalar", "group: 232.1.1.1\nsources: 10.0.0.5\n", "2: sources: 10.0.0.5 is not "
     "a list of source addresses (allowed: e.g. [192.0.2.5, 192.0.2.6] for an SSM group, or "
     "null)"),
    ("sources-hostname", "group: 232.1.1.1\nsources: [sender.example]\n", "2: sources: "
     "sender.example is not an IP address (allowed: e.g. [192.0.2.5, 192.0.2.6] for an SSM "
     "group, or null)"),
    # reply
    ("reply-unknown", "reply: multicast\n", "1: reply: multicast is not a reply mode (allowed: "
     "unicast to the sender, group to the group, or both)"),
    ("reply-in-listener", "listeners:\n  - {group: 239.1.1.1, reply: true}\n",
     "2: listeners[0].reply: true is not a reply mode (allowed: unicast to the sender, group "
     "to the group, or both)"),
    # allow of the listener's family
    ("allow-no-ipv6", "allow: [10.0.0.0/8]\nlisteners:\n  - group: 239.1.1.1\n"
     "  - group: ff15::1\n", "4: listeners[1].allow: [10.0.0.0/8] holds no IPv6 network, so "
     "nothing would be answered on ff15::1: add one (e.g. 2001:db8::/32) or write allow: null "
     "(the top-level allow on line 1 applies here; set another in this listener)"),
    ("allow-no-ipv4", "group: 239.1.1.1\nallow: ['2001:db8::/32']\n", "2: allow: "
     "[2001:db8::/32] holds no IPv4 network, so nothing would be answered on 239.1.1.1: add "
     "one (e.g. 10.0.0.0/8) or write allow: null"),
    ("allow-zone", "allow: ['fe80::%eth0/64']\n", "1: allow: fe80::%eth0/64: no %zone in allow "
     "(allowed: an address or CIDR such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)"),
    # max_datagram per family
    ("max_datagram-ipv4", "max_datagram: 65527\n", "1: max_datagram: 65527 is out of range "
     "1..65507 (the largest UDP payload over IPv4; up to 65527 for an IPv6 group)"),
    ("max_datagram-ipv6", "listeners:\n  - group: ff15::1\n    max_datagram: 65528\n",
     "3: listeners[0].max_datagram: 65528 is out of range 1..65527"),
    ("max_datagram-inherited", "max_datagram: 65520\nlisteners:\n  - group: ff15::1\n"
     "  - group: 239.1.1.1\n", "4: listeners[1].max_datagram: 65520 is out of range 1..65507 "
     "(the largest UDP payload over IPv4; up to 65527 for an IPv6 group) (the top-level "
     "max_datagram on line 1 applies here; set another in this listener)"),
    ("max_datagram-huge", "max_datagram: 70000\n", "1: max_datagram: 70000 is out of range "
     "1..65507"),
    ("max_datagram-word", "max_datagram: big\n", "1: max_datagram: big is not an integer "
     "(allowed: 1..65507, or up to 65527 for an IPv6 group)"),
    # YAML 1.1 base-60 integers are text here (2001:1:2:3:4:5:6:7 would be a number)
    ("port-base-60", "port: 1:30\n", "1: port: 1:30 is not an integer (allowed: 1..65535)"),
]


@pytest.mark.parametrize("text,message", [case[1:] for case in BAD], ids=[c[0] for c in BAD])
def test_bad_listener_config_gives_one_exact_line(tmp_path, text, message):
    assert problems(tmp_path, text) == [message]


def test_too_many_listeners(tmp_path):
    items = "".join(f"  - {{group: 239.2.{i // 250}.{i % 250 + 1}}}\n"
                    for i in range(MAX_LISTENERS + 1))
    assert problems(tmp_path, "ttl: 1\nlisteners:\n" + items) == [
        f"2: listeners: {MAX_LISTENERS + 1} listeners, more than {MAX_LISTENERS}: split them "
        "over several daemons, each with its own config file"]


def test_every_listener_problem_is_reported(tmp_path):
    text = """log_level: loud
listeners:
  - group: 239.1.1.1
    port: 0
  - group: 232.1.1.1
  - group: ff02::4242
  - group: 239.1.1.1
  - group: 239.1.1.1
    port: 0
"""
    assert problems(tmp_path, text) == [
        "1: log_level: loud is not a log level (allowed: debug, info, warning, error)",
        "4: listeners[0].port: 0 is out of range 1..65535",
        f"5: listeners[1].group: 232.1.1.1 is a source-specific group {SSM}: list the senders "
        "to join in sources, e.g. sources: [192.0.2.5], or use an any-source group",
        f"6: listeners[2].interface: null, but ff02::4242 is a link-scope group: {LINK}",
        "9: listeners[4].port: 0 is out of range 1..65535",
    ]


def test_a_listener_with_a_bad_key_is_not_also_reported_as_a_duplicate(tmp_path):
    assert problems(tmp_path, "listeners:\n  - {group: 239.1.1.1}\n"
                              "  - {group: 239.1.1.1, ttl: -1}\n") == [
        "3: listeners[1].ttl: -1 is out of range 0..255"]


# ------------------------------------------------------------------ describe (check-config)


def test_describe_shows_one_block_per_listener_and_reads_back(tmp_path):
    config = load_config(write(tmp_path, """
allow: [10.0.0.0/8, 2001:db8::/32]
listeners:
  - {group: 239.1.1.1, port: 5000, interface: eth0}
  - {group: ff15::1234, interface: all, rate_limit: off}
  - {group: 232.1.1.1, sources: [10.0.0.6, 10.0.0.5], reply: both}
"""))
    lines = describe(config)
    assert lines[1] == "listeners:"
    assert [line for line in lines if line.startswith("  - ")] == [
        "  - group: 239.1.1.1", "  - group: ff15::1234", "  - group: 232.1.1.1"]
    assert "    sources: [10.0.0.5, 10.0.0.6]" in lines and "    reply: both" in lines
    assert "    rate_limit: off" in lines and "    interface: all" in lines
    assert lines[-5:] == ["log_level: info", "status_interval: 5", "metrics: null",
                          "ssmping: null", "mesh: null"]
    again = load_config(write(tmp_path, "\n".join(lines) + "\n"))
    assert again.listeners == config.listeners


def test_describe_shows_the_mesh_and_reads_back(tmp_path):
    config = load_config(write(tmp_path, """
allow: [10.0.0.0/8]
group: 239.1.1.1
mesh: {group: 239.255.77.77, interface: eth0, interval: 0.2, expect: 6}
"""))
    lines = describe(config)
    assert lines[-1] == ("mesh: {group: 239.255.77.77, port: 9998, interval: 0.2, "
                         "interface: eth0, expect: 6}")
    again = load_config(write(tmp_path, "\n".join(lines) + "\n"))
    assert again.mesh == config.mesh and again.mesh.allow == config.mesh.allow


def test_describe_of_one_listener_stays_flat(tmp_path):
    lines = describe(load_config(write(tmp_path, "group: ff15::1\nallow: ['2001:db8::/32']\n")))
    assert lines[1:3] == ["group: ff15::1", "port: 9999"] and "allow: [2001:db8::/32]" in lines


def test_describe_does_not_cut_a_long_list(tmp_path):
    networks = [f"10.{i}.0.0/16" for i in range(20)]
    lines = describe(load_config(write(tmp_path, f"allow: [{', '.join(networks)}]\n")))
    assert f"allow: [{', '.join(networks)}]" in lines


# ------------------------------------------------------------------ the front door


def check_config(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcast_echo", "check-config", "-c", path],
                          capture_output=True, text=True, timeout=30)


def test_check_config_prints_each_listener(tmp_path):
    path = write(tmp_path, "listeners:\n  - {group: 239.1.1.1, interface: lo}\n"
                           "  - {group: ff15::1, port: 5000, interface: lo}\n")
    done = check_config(path)
    assert done.returncode == 0, done.stderr
    assert "  - group: 239.1.1.1\n" in done.stdout and "  - group: ff15::1\n" in done.stdout
    assert done.stdout.rstrip().endswith(f"{path}: ok")


def test_check_config_gives_78_and_one_line_per_problem(tmp_path):
    path = write(tmp_path, "listeners:\n  - group: 232.1.1.1\n  - group: 239.1.1.1\n"
                           "    sources: [10.0.0.5]\n  - group: 239.1.1.2\n"
                           "    log_level: debug\n")
    done = check_config(path)
    assert done.returncode == 78, done.stderr
    lines = done.stderr.splitlines()
    assert [line.split(": ")[0] for line in lines] == [  # in the order of the lines (#20.13)
        f"{path}:2", f"{path}:4", f"{path}:6"], lines
    assert [line.split(": ")[1] for line in lines] == [
        "listeners[0].group", "listeners[1].sources", "listeners[2].log_level"]
    assert "Traceback" not in done.stderr and not done.stdout


def test_check_config_empty_listeners(tmp_path):
    path = write(tmp_path, "listeners: []\n")
    done = check_config(path)
    assert done.returncode == 78
    assert done.stderr.splitlines() == [
        f"{path}:1: listeners: an empty list: list at least one listener (- {{group: "
        "239.1.1.1, port: 5000}), or leave the key out for one listener from the top-level "
        "keys"]


# ------------------------------------------------------------------ the shipped file


def test_shipped_listeners_example_loads_when_uncommented(tmp_path):
    """The commented-out `listeners:` example of etc/mcast-echo.yaml is a valid config: an
    IPv6 group, and an SSM group with reply: both."""
    lines, inside = [], False
    for line in SHIPPED.read_text().splitlines():
        inside = inside or line.startswith("#listeners:")
        lines.append(line[1:] if inside and line.startswith("#") else line)
    config = load_config(write(tmp_path, "\n".join(lines) + "\n"))
    assert len(config.listeners) >= 3
    assert any(one.ipv6 and not one.ssm for one in config.listeners)
    assert any(one.ssm and one.reply == "both" and not one.ipv6 for one in config.listeners)


@pytest.mark.parametrize("doc", ["etc/mcast-echo.yaml", "packaging/man/mcast-echo.yaml.5",
                                 "README.md"])
def test_docs_name_every_key_and_the_decisions(doc):
    text = (REPO / doc).read_text().replace("\\-", "-").replace("\\&", "")
    if doc == "README.md":
        text = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    for key in [line.split(":")[0] for line in describe(load_config(str(SHIPPED)))[1:]]:
        assert key in text, f"{key} is not documented in {doc}"
    for fact in ("listeners", "232.0.0.0/8", "ff3x::/32", "one listener per group and port",
                 "named interface", "65527"):
        assert fact in " ".join(text.split()).replace("# ", "").lower(), f"{doc}: {fact}"
