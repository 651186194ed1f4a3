"""IPv4-mapped IPv6 addresses (#20.12): asked about before any is_* test, on every Python.

From Python 3.13 `ipaddress` answers is_multicast, is_loopback, ... of ::ffff:239.1.1.1 for
the IPv4 address inside it (3.13.5 says is_multicast; 3.11 says not), while the kernel takes
it for an IPv6 address that is never a group. The `py313` runs make this Python answer as
3.13.5 does, so the tests hold on 3.11 and on 3.13 alike.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from mcast_echo import addresses
from mcast_echo.config import ConfigError, load_config
from mcast_echo.ping import options as ping_options
from mcast_echo.wire import tlv

MAPPED_GROUP = "::ffff:239.1.1.1"


@pytest.fixture(params=["native", "py313"])
def python(request, monkeypatch):
    """This Python's ipaddress, or one that answers for the IPv4 address inside a mapped one."""
    if request.param == "py313":
        for name in ("is_multicast", "is_loopback", "is_link_local", "is_unspecified",
                     "is_private", "is_reserved"):
            native = getattr(ipaddress.IPv6Address, name)

            def answer(self, name=name, native=native):
                inside = self.ipv4_mapped
                return getattr(inside, name) if inside is not None else native.fget(self)
            monkeypatch.setattr(ipaddress.IPv6Address, name, property(answer))
        assert ipaddress.IPv6Address(MAPPED_GROUP).is_multicast
    return request.param


def test_the_helpers(python):
    mapped = ipaddress.ip_address(MAPPED_GROUP)
    assert addresses.is_ipv4_mapped(mapped) and not addresses.is_multicast(mapped)
    assert addresses.is_multicast(ipaddress.ip_address("ff15::1"))
    assert addresses.is_multicast(ipaddress.ip_address("239.1.1.1"))
    assert not addresses.is_link_scope_group(mapped)
    assert not addresses.is_never_routed_group("::ffff:224.0.0.1")
    assert not addresses.needs_zone("::ffff:169.254.1.1") and addresses.needs_zone("fe80::1")
    assert addresses.not_a_group(mapped) == ("::ffff:239.1.1.1 is an IPv4-mapped IPv6 "
                                             "address, not a multicast group (write 239.1.1.1)")


def test_a_mapped_group_in_the_config_is_not_a_multicast_address(tmp_path, python):
    path = tmp_path / "c.yaml"
    path.write_text(f"group: '{MAPPED_GROUP}'\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert e.value.problems == [
        f"{path}:1: group: ::ffff:239.1.1.1 is an IPv4-mapped IPv6 address, not a multicast "
        "group (write 239.1.1.1) (allowed: ff00::/8, e.g. ff15::1234; use ff15::/16 for a "
        "private group)"]


@pytest.mark.parametrize("key", ["allow", "sources"])
def test_a_mapped_loopback_source_is_named_as_mapped(tmp_path, python, key):
    path = tmp_path / "c.yaml"
    group = "ff3e::1234" if key == "sources" else "ff15::1234"
    path.write_text(f"group: {group}\n{key}: ['::ffff:127.0.0.1']\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert len(e.value.problems) == 1
    assert "an IPv4-mapped address" in e.value.problems[0], e.value.problems
    assert "127.0.0.1" in e.value.problems[0].split("mapped address", 1)[1], e.value.problems


def test_ping_refuses_a_mapped_group_as_usage(python):
    with pytest.raises(Exception) as e:
        ping_options.parse_target(MAPPED_GROUP)
    assert str(e.value) == ("::ffff:239.1.1.1 is an IPv4-mapped IPv6 address, not a multicast "
                            "group (write 239.1.1.1)")


def test_ping_of_a_mapped_group_exits_64():
    done = subprocess.run([sys.executable, "-m", "mcast_echo", "ping", "-c", "1", MAPPED_GROUP],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 64, done.stderr
    assert "IPv4-mapped IPv6 address, not a multicast group (write 239.1.1.1)" in done.stderr


def test_replies_never_go_to_a_mapped_group(python):
    client = ipaddress.ip_address("fd00::2")
    mapped = ipaddress.ip_address(MAPPED_GROUP)
    responder = tlv.Responder(groups=(mapped, ipaddress.ip_address("ff3e::4321:1234")))
    assert not tlv.group_allowed(mapped, client, responder)
    assert tlv.group_allowed(ipaddress.ip_address("ff3e::4321:1234"), client, responder)
