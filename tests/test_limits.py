"""Kernel limits: a fake /proc gives the warnings; the real one is read."""

import logging
from pathlib import Path

from mcast_echo.cli import main
from mcast_echo.net.limits import (
    SYSCTLS,
    KernelLimits,
    buffer_reports,
    expected_grant,
    membership_reports,
    mesh_reports,
    predicted_reports,
    read_limits,
)
from mcast_echo.schema import Config, Listener
from mcast_echo.schema.mesh import Mesh


def fake_proc(root: Path, **values: int) -> str:
    for name, value in values.items():
        path = root / SYSCTLS[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return str(root)


def test_fake_proc_is_read(tmp_path):
    limits = read_limits(fake_proc(tmp_path, rmem_max=1000000, wmem_max=2000000,
                                   rmem_default=3000, wmem_default=4000,
                                   igmp_max_memberships=7))
    assert limits == KernelLimits(1000000, 2000000, 3000, 4000, 7, None, None)


def test_real_proc_is_read():
    limits = read_limits()
    assert limits.rmem_max and limits.rmem_max > 0
    assert limits.igmp_max_memberships is not None
    with open("/proc/sys/net/core/rmem_max") as f:
        assert limits.rmem_max == int(f.read())


def test_capped_request_warns_with_the_fix():
    limits = KernelLimits(rmem_max=212992, wmem_max=212992, rmem_default=212992,
                          wmem_default=212992)
    recv, send = buffer_reports(4 << 20, None, limits, granted_recv=425984, granted_send=212992)
    assert recv.capped and recv.level == logging.WARNING
    assert recv.message() == (
        "receive buffer: requested 4 MiB, granted 416 KiB (limit net.core.rmem_max = 208 KiB; "
        "Linux doubles the request for its bookkeeping); capped, so the buffer is 208 KiB "
        "usable instead of 4 MiB: fix with `sysctl -w net.core.rmem_max=4194304`")
    assert not send.capped and send.level == logging.INFO
    assert send.message() == ("send buffer: kernel default, granted 208 KiB "
                              "(net.core.wmem_default = 208 KiB)")


def test_request_within_limit_is_info():
    limits = KernelLimits(rmem_max=8 << 20, wmem_max=8 << 20)
    recv, _ = buffer_reports(1 << 20, None, limits, granted_recv=2 << 20)
    assert not recv.capped
    assert recv.message().startswith("receive buffer: requested 1 MiB, granted 2 MiB")


def test_expected_grant_is_linux_arithmetic():
    assert expected_grant(4 << 20, 1 << 20, 0) == 2 << 20
    assert expected_grant(1000, 1 << 20, 0) == 2304  # the kernel's floor
    assert expected_grant(None, 1 << 20, 212992) == 212992


def test_limits_command_on_a_fake_proc(tmp_path, capsys):
    proc = fake_proc(tmp_path / "proc", rmem_max=100000, wmem_max=100000, rmem_default=50000,
                     wmem_default=50000, igmp_max_memberships=20)
    config = tmp_path / "c.yaml"
    config.write_text("recv_buffer: 1MiB\n")
    assert main(["limits", "-c", str(config), "--proc", proc]) == 0
    out = capsys.readouterr().out
    assert "net.core.rmem_max                  100000" in out
    # #20.13: absent in a network namespace is no error (it said "unreadable")
    assert "net.ipv6.mld_max_msf               not visible here (the host's value applies)" in out
    assert "would get 200000 bytes" in out
    assert "fix with `sysctl -w net.core.rmem_max=1048576`" in out


def test_predicted_reports_cover_each_listener_and_igmp():
    config = Config(path="x", listeners=(Listener(recv_buffer=1 << 30),))
    lines = predicted_reports(config, read_limits())
    assert [level for level, _ in lines][:1] == [logging.WARNING]
    assert lines[-1][1].startswith("IGMP/MLD: 1 group(s) (1 IPv4, 0 IPv6, 0 SSM)")


def limits_with(**values) -> KernelLimits:
    return KernelLimits(**{"igmp_max_memberships": 20, "igmp_max_msf": 10, "mld_max_msf": 64,
                           "optmem_max": 20480, **values})


def test_membership_limits_name_the_sysctl_that_is_short():
    sources = tuple(f"10.0.0.{n}" for n in range(1, 13))  # 12 > igmp_max_msf = 10
    config = Config(path="x", listeners=(
        Listener(group="232.1.1.1", sources=sources),
        Listener(group="239.1.1.1", interface="all"),
        Listener(group="ff15::1", port=5000),
    ))
    lines = membership_reports(config, limits_with(), interfaces=25)
    text = "\n".join(line for _, line in lines)
    assert lines[0] == (logging.INFO, "IGMP/MLD: 3 group(s) (2 IPv4, 1 IPv6, 1 SSM), one socket "
                        "each unless their port shares one, up to 25 membership(s) per socket "
                        "of its own; net.ipv4.igmp_max_memberships = 20")
    assert "`sysctl -w net.ipv4.igmp_max_memberships=25`" in text
    assert "`sysctl -w net.ipv4.igmp_max_msf=12`" in text
    assert "mld_max_msf" not in text and "optmem_max" not in text
    assert all(level == logging.WARNING for level, _ in lines[1:])


def test_optmem_is_checked_for_a_socket_with_many_memberships():
    config = Config(path="x", listeners=(Listener(group="239.1.1.1", interface="all"),))
    lines = membership_reports(config, limits_with(igmp_max_memberships=1000, optmem_max=4096),
                               interfaces=100)
    assert any("`sysctl -w net.core.optmem_max=6400`" in line for _, line in lines)
    quiet = membership_reports(config, limits_with(igmp_max_memberships=1000), interfaces=2)
    assert len(quiet) == 1


def test_a_mesh_larger_than_the_arp_table_is_warned_of(tmp_path):
    """Each mesh peer takes an ARP entry; the table (one per host) drops echoes and IGMP
    reports past gc_thresh3: the fleet test lost its snooped joins that way at 50 hosts."""
    limits = read_limits(fake_proc(tmp_path, gc_thresh2=512, gc_thresh3=1024))
    assert (limits.gc_thresh2, limits.gc_thresh3) == (512, 1024)

    def mesh_of(hosts):
        return Config(path="x", mesh=Mesh(group="239.255.77.77", interface="eth0",
                                          expect=hosts))
    assert mesh_reports(mesh_of(50), limits) == []
    assert mesh_reports(Config(path="x"), limits) == []
    [(level, line)] = mesh_reports(mesh_of(1000), limits)
    assert level == logging.WARNING
    assert "each of its 999 peers, more than net.ipv4.neigh.default.gc_thresh2 = 512" in line
    assert ("fix with `sysctl -w net.ipv4.neigh.default.gc_thresh2=1063 "
            "net.ipv4.neigh.default.gc_thresh3=2126`") in line
    assert line in [text for _, text in predicted_reports(mesh_of(1000), limits)]
