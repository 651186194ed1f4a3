"""Fixtures any test file may ask for: the private-network guard, a responder host on a
cable, a config file, a notify sink, ping's config file (none, or the default group's),
and the seed's plain echo server on a LAN; every module must leave the namespace clean."""

import subprocess

import pytest

from clients import PLAIN_ECHO_SERVER
from leakguard import Snapshot
from loadlab import NotifySink
from netlab import ScriptOnLan, cabled_host, in_fresh_netns


@pytest.fixture(scope="session", autouse=True)
def private_network():
    """Refuse to run anywhere but a private network namespace: multicast never leaves the host."""
    if not in_fresh_netns():
        pytest.exit(
            "tests must run in a private network namespace: use `make test` "
            "(it wraps pytest in `unshare --net`)", returncode=2)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    yield


@pytest.fixture(scope="module", autouse=True)
def leaves_the_namespace_clean():
    """Each module leaves no link, nftables table or process behind (leakguard.py): what it
    left is removed, and the module's last test fails naming it."""
    before = Snapshot.now()
    yield
    left = before.leftovers()
    if left:
        before.restore()
        pytest.fail("left behind in the test's namespace: " + "; ".join(left), pytrace=False)


_links = 0


@pytest.fixture
def responder_host():
    """Another "host": a namespace cabled to the test's by a veth pair.

    The test's side is 10.66.N.1, the host's eth0 is 10.66.N.2; both route
    224.0.0.0/4 over the cable. Yields (host, local_addr, host_addr).
    """
    global _links
    _links += 1
    with cabled_host(f"responder{_links}", f"veth{_links}", f"10.66.{_links}") as host:
        yield host, f"10.66.{_links}.1", f"10.66.{_links}.2"


@pytest.fixture
def write_config(tmp_path):
    """Write a config file; returns its path. Call again to rewrite it (for SIGHUP)."""
    path = tmp_path / "mcast-echo.yaml"

    def write(text: str):
        path.write_text(text)
        return path

    return write


@pytest.fixture
def sink(tmp_path):
    """A NOTIFY_SOCKET for the daemon under test: READY=1, STATUS=..., as systemd sees them."""
    notify = NotifySink(tmp_path / "notify.sock")
    yield notify
    notify.close()


@pytest.fixture
def no_config_file(monkeypatch, tmp_path):
    """ping takes no defaults from an installed /etc/mcast-echo.yaml: MCAST_ECHO_CONFIG names
    an empty file. (A module asks for it with pytestmark = usefixtures("no_config_file").)"""
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    monkeypatch.setenv("MCAST_ECHO_CONFIG", str(path))


@pytest.fixture(scope="module")
def client_config(tmp_path_factory):
    """ping takes its defaults from a file of ours -- group 224.3.29.71, port 9999 -- not from
    an installed /etc/mcast-echo.yaml; yields its path. One per module that asks for it."""
    path = tmp_path_factory.mktemp("client") / "mcast-echo.yaml"
    path.write_text("group: 224.3.29.71\nport: 9999\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCAST_ECHO_CONFIG", str(path))
        yield str(path)


@pytest.fixture
def plain_echo():
    """A plain echo server (the seed's) at 10.77.0.9 on a bridge with the test (10.77.0.1),
    on the default group and port; yields the Lan."""
    with ScriptOnLan("plain", 9, PLAIN_ECHO_SERVER, "224.3.29.71", "9999") as server:
        yield server.lan

