"""A village house finds its chain by itself: the gateway serves its embedded chain and
announces it next to its beacons; a house with ``[chain] backend = "electrum"``, ``discover =
true`` and no URL follows it, pins the gateway (trust on first use) and sees its blocks. A
house that trusts another gateway (``gateways``, or a pin) ignores the announcement and stops
with one line saying so. Real node processes, discovery over loopback broadcast."""
from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eschaton.net.identity import create_identity
from tests.integration.node.harness import NodeProc, free_port, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


class Village:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.disc = free_port(socket.SOCK_DGRAM)
        self.nodes: list[NodeProc] = []

    def node(self, name: str, *chain: str) -> NodeProc:
        n = NodeProc(self.root, name, chain_dir=None, listen=["tcp://127.0.0.1:0"],
                     discovery_port=self.disc, sections=["[chain]", *chain])
        self.nodes.append(n)
        return n

    def gateway(self) -> NodeProc:
        return self.node("gw", f'serve = "tcp://127.0.0.1:{free_port()}"')

    def house(self, name: str, *chain: str) -> NodeProc:
        return self.node(name, 'backend = "electrum"', "discover = true", *chain)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Village]:
    v = Village(tmp_path)
    try:
        yield v
    finally:
        for n in reversed(v.nodes):
            with contextlib.suppress(Exception):
                n.stop()


def test_a_house_follows_the_announced_chain_and_pins_its_gateway(cluster: Village) -> None:
    gw = cluster.gateway()
    gw.start().wait_ready()
    run_cli("chain", "mine", "3", "--datadir", str(gw.datadir))
    h = cluster.house("h")
    h.start().wait_ready()
    st = h.api("node.status")
    assert st["chain"]["backend"] == "electrum"
    assert (h.datadir / "chain-gateway").read_text() == gw.id + "\n"
    height = gw.api("node.status")["chain"]["height"]
    assert st["chain"]["height"] == height
    run_cli("chain", "mine", "2", "--datadir", str(gw.datadir))
    deadline = time.monotonic() + 30
    while h.api("node.status")["chain"]["height"] != height + 2:
        assert time.monotonic() < deadline, "the house does not follow the gateway's chain"
        time.sleep(0.3)


def test_an_untrusted_announcer_is_not_followed(cluster: Village, tmp_path: Path) -> None:
    disc = cluster.disc
    gw = cluster.gateway()
    gw.start().wait_ready()
    other = create_identity(tmp_path / "other").node_id.hex()
    h = cluster.house("h", f'gateways = ["{other}"]', "discover_timeout_s = 4")
    h.start()
    assert h.proc is not None
    assert h.proc.wait(timeout=60) != 0
    err = "\n".join(h.stderr)
    assert f"no chain announced from {other} on port {disc} within 4 s" in err, err
    assert not (h.datadir / "chain-gateway").exists()
    # A pin from an earlier start holds the same way.
    p = cluster.house("p", "discover_timeout_s = 4")
    p.datadir.mkdir(mode=0o700)
    (p.datadir / "chain-gateway").write_text(other + "\n")
    p.start()
    assert p.proc is not None
    assert p.proc.wait(timeout=60) != 0
    assert f"no chain announced from {other}" in "\n".join(p.stderr)
