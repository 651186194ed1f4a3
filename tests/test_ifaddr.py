"""Interface addresses: every one, secondaries included, as `ip -4 addr` lists them."""

import socket
import subprocess

from mcast_echo.net import ifaddr
from netlab import Host, ip, veth


def ip_tool_addresses() -> set[tuple[int, str]]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        found.add((int(fields[0].rstrip(":")), fields[3].split("/")[0]))
    return found


def test_every_address_with_its_interface_secondaries_included():
    with Host("addrs") as host:
        veth("vaddr0", "10.55.0.1/24", host, "eth0", "10.55.0.2/24")
        try:
            ip("addr", "add", "10.55.0.7/24", "dev", "vaddr0")  # secondary, no label
            ip("addr", "add", "10.55.0.8/24", "dev", "vaddr0", "label", "vaddr0:1")
            index = socket.if_nametoindex("vaddr0")
            found = set(ifaddr.ipv4_addresses())
            assert {(index, "10.55.0.1"), (index, "10.55.0.7"), (index, "10.55.0.8"),
                    (1, "127.0.0.1")} <= found
            assert found == ip_tool_addresses()
            assert ifaddr.index_of_address("10.55.0.7") == index
            assert ifaddr.index_of_address("10.55.0.99") is None
        finally:
            ip("link", "del", "vaddr0")


def test_primary_address():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert ifaddr.primary_address(sock, "lo") == "127.0.0.1"
        assert ifaddr.primary_address(sock, "nonexistent0") is None
