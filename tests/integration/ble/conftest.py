from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.node.harness import Cluster

REPO = Path(__file__).resolve().parents[3]


def kernel_has_bluetooth() -> bool:
    """Whether an HCI socket can be opened here (then ``hci-socket:0`` may be a real adapter)."""
    try:
        socket.socket(socket.AF_BLUETOOTH, socket.SOCK_RAW, 1).close()  # BTPROTO_HCI
    except (OSError, AttributeError):
        return False
    return True


class Air:
    """The relay process (``relay.py``): one virtual controller per port, on one shared link."""

    def __init__(self, n: int) -> None:
        self.ports = []
        for _ in range(n):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.ports.append(s.getsockname()[1])
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.ble.relay",
                                      *map(str, self.ports)], cwd=REPO, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def adapter(self, i: int) -> str:
        return f"tcp-client:127.0.0.1:{self.ports[i]}"

    def drop(self) -> int:
        """End every LE connection as a lost radio link would; returns how many ended."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("drop\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline().split()[1])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture()
def air() -> Iterator[Air]:
    a = Air(2)
    try:
        yield a
    finally:
        a.close()
