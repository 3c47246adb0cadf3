"""``node run`` under a systemd-style notify socket: READY=1 once the API answers, STOPPING=1 on
SIGTERM, then a clean exit. Both a path socket and an abstract (``@name``) one."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from tests.integration.node.harness import Cluster

pytestmark = pytest.mark.timeout(120)


def _datagrams(sock: socket.socket, until: str, timeout: float = 60.0) -> list[str]:
    """Notification datagrams received until one contains the line ``until``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {until} within {timeout}s; got {got}"
        sock.settimeout(remaining)
        got.append(sock.recv(4096).decode())
        if until in got[-1].splitlines():
            return got


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_and_stopping_are_notified(cluster: Cluster, tmp_path: Path, abstract: bool) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if abstract:
            name = f"eschaton-test-{os.getpid()}-{os.urandom(4).hex()}"
            sock.bind("\0" + name)
            env = {"NOTIFY_SOCKET": "@" + name}
        else:
            path = tmp_path / "notify.sock"
            sock.bind(str(path))
            env = {"NOTIFY_SOCKET": str(path)}
        node = cluster.node("solo", listen=["tcp://127.0.0.1:0"])
        node.start(env=env)
        ready = _datagrams(sock, "READY=1")
        # READY is sent once the API is up: the node answers at once, without retries.
        assert node.api("node.status")["name"] == "solo"
        assert "STATUS=running" in ready[-1].splitlines()
        assert node.stop() == 0  # SIGTERM
        stopping = _datagrams(sock, "STOPPING=1")
        assert not any("READY=1" in d for d in stopping)
    finally:
        sock.close()
