import subprocess

import pytest

from loadlab import NotifySink
from netlab import Host, in_fresh_netns, veth


@pytest.fixture(scope="session", autouse=True)
def private_network():
    """Refuse to run anywhere but a private network namespace: multicast never leaves the host."""
    if not in_fresh_netns():
        pytest.exit(
            "tests must run in a private network namespace: use `make test` "
            "(it wraps pytest in `unshare --net`)", returncode=2)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    yield


_links = 0


@pytest.fixture
def responder_host():
    """Another "host": a namespace cabled to the test's by a veth pair.

    The test's side is 10.66.N.1, the host's eth0 is 10.66.N.2; both route
    224.0.0.0/4 over the cable. Yields (host, local_addr, host_addr).
    """
    global _links
    _links += 1
    with Host(f"responder{_links}") as host:
        local_if = f"veth{_links}"
        veth(local_if, f"10.66.{_links}.1/24", host, "eth0", f"10.66.{_links}.2/24")
        yield host, f"10.66.{_links}.1", f"10.66.{_links}.2"
    subprocess.run(["ip", "link", "del", local_if], capture_output=True)


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
