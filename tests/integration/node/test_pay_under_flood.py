"""A legitimate peer keeps paying through a flood, and a friend dialling in during it links.

Two ``eschaton node run`` processes with a trade channel on the embedded chain. While
``tests/integration/net/flood.py`` hammers the payee's listening port from other loopback
addresses (hundreds of idle connections, garbage bytes, Noise handshakes from random keys, round
after round), the payer makes 50 payments over its existing link. The flood only competes for
*pending* slots; an established link holds none, so the right outcome is that the link is not
dropped at all (no ``link_closed`` on either side), every payment completes, and the balances
move by exactly the sum paid. Meanwhile a third node, pinned in the payee's config and dialling
in from 127.0.0.1, must link although every pending slot is held by the flood: admission evicts
the oldest handshake of the busiest address for it (``core/link/admission.py``). The payee's
caps hold at the end, its log stays small and has no traceback. No timing is asserted.
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from eschaton.core.link.identity import NodeId
from eschaton.net.identity import load_or_create_identity
from tests.integration.net.flood import FloodThread
from tests.integration.net.procs import NodeProcess
from tests.integration.node.harness import Cluster, free_port, mirrored, open_channel, poll

pytestmark = pytest.mark.timeout(600)
PAYMENTS = 50
AMOUNT = 1000
CAPS = ["max_pending_handshakes = 16", "max_pending_per_address = 4", "max_links = 4",
        "handshake_timeout = 4.0"]


def _friend_config(path: Path, datadir: Path, b: str, port: int) -> Path:
    """A network-only node (``python -m eschaton.net.mesh``) that dials b and listens nowhere, so
    its link to b can only be inbound at b."""
    path.write_text("\n".join([
        "[node]", f'datadir = "{datadir}"', "", "[network]", "listen = []", "",
        "[network.discovery]", "enabled = false", "", "[[network.peers]]", f'id = "{b}"',
        f'url = "tcp://127.0.0.1:{port}"']) + "\n")
    return path


def test_payments_complete_and_a_pinned_peer_links_during_a_flood(cluster: Cluster,
                                                                   tmp_path: Path) -> None:
    disc = free_port(socket.SOCK_DGRAM)
    pb = free_port()
    friend_id = load_or_create_identity(tmp_path / "c").node_id
    # b pins the friend; the URL it would dial the friend at has no listener.
    a = cluster.node("a", listen=["tcp://127.0.0.1:0"], discovery_port=disc)
    b = cluster.node("b", listen=[f"tcp://127.0.0.1:{pb}"], discovery_port=disc, network=CAPS,
                     peers=[(friend_id.hex(), f"tcp://127.0.0.1:{free_port()}")])
    a.start().wait_ready()
    b.start().wait_ready()
    poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked", timeout=60)
    cluster.chain.mine(101, to=a.api("wallet.address")["address"])
    poll(lambda: a.api("wallet.balance")["spendable"] > 0, "a has spendable coins")
    cid = open_channel(cluster.chain, a, b, 4_000_000)
    before_a, before_b = mirrored(a, b, cid)
    logs_a, logs_b = len(a.logs), len(b.logs)

    flood = FloodThread("127.0.0.1", pb, NodeId.from_hex(b.id), idle=300, garbage=100,
                        strangers=20, hold=6.0).start()
    friend = None
    try:
        poll(lambda: b.api("node.status")["net"]["pending"] >= 12, "the flood fills b's slots")
        friend = NodeProcess(_friend_config(tmp_path / "c.toml", tmp_path / "c", b.id, pb))
        for i in range(PAYMENTS):
            st = a.api("channel.pay", channel=cid, amount=AMOUNT, id=f"flood-{i}")
            assert st["payment_state"] == "complete", st
        friend.wait_for(timeout=120.0, event="link_open", id=b.id)
        during = b.api("node.status")["net"]
    finally:
        stats = flood.stop(120)
        if friend is not None:
            friend.stop()
    assert not stats.errors, stats.errors
    assert stats.opened > 300 and flood.rounds_done >= 1, stats

    after_a, after_b = mirrored(a, b, cid)
    paid = PAYMENTS * AMOUNT
    assert after_b["local_sat"] == before_b["local_sat"] + paid, (before_b, after_b)
    assert after_a["local_sat"] == before_a["local_sat"] - paid - (after_a["fee_sat"] - before_a["fee_sat"])
    assert after_a["version"] == before_a["version"] + PAYMENTS

    # The caps held (pinned peers take no stranger's slot), the flood was refused and evicted.
    assert during["pending"] <= 16 and during["links"] <= 4, during
    assert during["refused"]["pending_full"] + during["refused"]["evicted"] > 0, during
    # The payment link was never dropped.
    for n, start, other in ((a, logs_a, b), (b, logs_b, a)):
        closed = [r for r in n.logs[start:] if r.get("msg") == "link_closed"
                  and r.get("id") == other.id]
        assert not closed, (n.name, closed)
    assert b.id in a.linked() and a.id in b.linked()
    # b's log during the flood: a few rate-limited lines, no traceback.
    flood_lines = b.logs[logs_b:]
    text = "".join(b.stderr) + "\n".join(str(r) for r in flood_lines)
    assert "Traceback" not in text and not any("exc" in r for r in flood_lines), text[-3000:]
    warnings = [r for r in flood_lines if r.get("level") in ("WARNING", "ERROR", "warning", "error")]
    assert len(warnings) <= 30, warnings[-10:]
