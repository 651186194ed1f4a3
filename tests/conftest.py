import subprocess

import pytest

from netlab import in_fresh_netns


@pytest.fixture(scope="session", autouse=True)
def private_network():
    """Refuse to run anywhere but a private network namespace: multicast never leaves the host."""
    if not in_fresh_netns():
        pytest.exit(
            "tests must run in a private network namespace: use `make test` "
            "(it wraps pytest in `unshare --net`)", returncode=2)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    yield
