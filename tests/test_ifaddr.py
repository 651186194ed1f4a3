"""Interface addresses: rtnetlink and the SIOCGIFCONF fallback both see every address."""

import socket

from mcast_echo import ifaddr
from netlab import Host, ip, veth


def test_netlink_and_ioctl_agree_secondaries_included():
    with Host("addrs") as host:
        veth("vaddr0", "10.55.0.1/24", host, "eth0", "10.55.0.2/24")
        try:
            ip("addr", "add", "10.55.0.7/24", "dev", "vaddr0")  # secondary, no label
            ip("addr", "add", "10.55.0.8/24", "dev", "vaddr0", "label", "vaddr0:1")
            index = socket.if_nametoindex("vaddr0")
            netlink = set(ifaddr.netlink_ipv4_addresses())
            ioctl = set(ifaddr.ioctl_ipv4_addresses())
            assert {(index, "10.55.0.1"), (index, "10.55.0.7"), (index, "10.55.0.8"),
                    (1, "127.0.0.1")} <= netlink
            assert ioctl == netlink
            assert ifaddr.index_of_address("10.55.0.7") == index
            assert ifaddr.index_of_address("10.55.0.99") is None
        finally:
            ip("link", "del", "vaddr0")
