"""A discovered neighbour whose first dial fails is dialled again until the link forms.

A neighbour's beacons raise an event only when it is first heard or its addresses change, so a
node that gave up after one failed dial would never link to it while its beacons keep coming
(on a mesh, the first beacon often arrives before unicast has a route). Here the dialled node
announces a relay port that nothing listens on at first: the first dial is refused; then the
relay (socat, to the node's real port) starts, and the link forms on a later attempt.
"""
from __future__ import annotations

import socket
import subprocess

import pytest

from eschaton.net.identity import load_or_create_identity
from tests.conftest import need_tool
from tests.integration.node.harness import Cluster, free_port, poll

pytestmark = pytest.mark.timeout(120)


def test_a_failed_first_dial_to_a_neighbour_is_tried_again(cluster: Cluster) -> None:
    socat = need_tool("socat")
    disc = free_port(socket.SOCK_DGRAM)
    ports = {"a": free_port(), "b": free_port()}
    relay = free_port()
    # Keys first: the lower id dials, so the other one announces the relay.
    ids = {n: load_or_create_identity(cluster.root / n).node_id for n in "ab"}
    dialled = max("ab", key=lambda n: ids[n].raw)
    dialer = "a" if dialled == "b" else "b"
    nodes = {n: cluster.node(n, listen=[f"tcp://127.0.0.1:{ports[n]}"], discovery_port=disc) for n in "ab"}
    cfg = nodes[dialled].config
    cfg.write_text(cfg.read_text().replace("[network]\n", f'[network]\nadvertise = ["tcp://127.0.0.1:{relay}"]\n', 1))
    for n in nodes.values():
        n.start().wait_ready()
        assert n.id == ids[n.name].hex()
    d, t = nodes[dialer], nodes[dialled]

    def refused() -> bool:
        return any("neighbour" in str(r.get("msg", "")) and "trying again" in str(r.get("msg", ""))
                   for r in d.logs)

    poll(refused, f"{dialer}'s first dial to the relay refused")
    assert t.id not in d.linked()
    proc = subprocess.Popen([socat, f"TCP-LISTEN:{relay},bind=127.0.0.1,reuseaddr,fork",
                             f"TCP:127.0.0.1:{ports[dialled]}"])
    cluster.extra.append(proc)
    poll(lambda: t.id in d.linked() and d.id in t.linked(), "the link through the relay", timeout=60)
