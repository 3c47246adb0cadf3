"""Automatic block production on a village chain (``[chain] block_interval_s`` and
``block_after_tx_s``), with real node processes: a channel opens and closes with nobody mining,
the schedule makes blocks whose coinbase pays the producing node's wallet, and a node that could
not make blocks refuses the keys at start with one line."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    free_port,
    mirrored,
    pay,
    poll,
    run_cli,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _made(n: NodeProc) -> list[dict[str, object]]:
    return [r for r in n.logs if r.get("msg") == "block produced"]


def test_a_channel_opens_and_closes_with_nobody_mining(cluster: Cluster) -> None:
    # The gateway owns the village chain and makes a block 0.5 s after a transaction waits; a and
    # b share the chain (the keys are only acted on by the owner: theirs make nothing).
    disc = free_port(socket.SOCK_DGRAM)
    keys = ["block_after_tx_s = 0.5"]
    g = cluster.node("g", sections=keys)
    g.start().wait_ready()
    a, b = (cluster.node(n, listen=["tcp://127.0.0.1:0"], discovery_port=disc, sections=keys) for n in "ab")
    for n in (a, b):
        n.start()
    for n in (a, b):
        n.wait_ready()
    poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")
    assert g.cli("node", "status")["chain"]["blocks"]["after_tx_s"] == 0.5
    assert a.cli("node", "status")["chain"]["blocks"] is None  # not the owner: makes no blocks
    # Set-up only: coins for a (matured by hand, as a village would have them from earlier).
    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
    height = cluster.chain.height()
    assert _made(g) == []  # the mempool was empty: nothing was due

    st = a.cli("channel", "open", b.id, "200000")
    cid = str(st["channel"])
    for n in (a, b):  # the funding transaction confirms by itself
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "OPEN", f"{n.name}: {cid[:12]} OPEN")
    funding = a.channel(cid)["funding_txid"]  # type: ignore[index]
    assert cluster.chain.tx(funding)["height"] == height + 1
    made = _made(g)
    assert [r["reason"] for r in made] == ["transaction"] and made[0]["height"] == height + 1

    pay(a, b, cid, 12_345)
    va, vb = mirrored(a, b, cid)
    ta, tb = a.wallet_total(), b.wallet_total()
    assert a.cli("channel", "close", cid)["state"] in ("CLOSING", "CLOSED")
    for n in (a, b):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "CLOSED", f"{n.name}: {cid[:12]} CLOSED")
    poll(lambda: a.wallet_total() == ta + va["close_sat"], f"a's wallet +{va['close_sat']}")
    poll(lambda: b.wallet_total() == tb + vb["close_sat"], f"b's wallet +{vb['close_sat']}")
    st = g.cli("node", "status")["chain"]
    assert st["blocks"]["produced"] == len(_made(g)) >= 2 and st["height"] == cluster.chain.height()
    # The coinbases (subsidy and the fees) paid the gateway's own wallet.
    assert g.api("wallet.balance")["immature"] > 0
    assert all(r["reason"] == "transaction" for r in _made(g))


def test_the_schedule_makes_blocks_for_the_owners_wallet(tmp_path: Path) -> None:
    n = NodeProc(tmp_path, "gw", chain_dir=None, sections=["[chain]", "block_interval_s = 0.2"])
    try:
        n.start().wait_ready()
        poll(lambda: len(_made(n)) >= 3, "three scheduled blocks")
        made = _made(n)
        heights = [int(r["height"]) for r in made]  # type: ignore[call-overload]
        assert heights == list(range(1, len(made) + 1))  # one log line per block, none skipped
        assert all(r["reason"] == "schedule" for r in made)
        st = n.cli("node", "status")["chain"]
        assert st["blocks"]["interval_s"] == 0.2 and st["blocks"]["produced"] >= 3
        assert st["blocks"]["last_reason"] == "schedule"
        info = run_cli("chain", "info", "--datadir", str(n.datadir), "--json").stdout
        assert '"interval_s": 0.2' in info and '"last_reason": "schedule"' in info
        assert n.api("wallet.balance")["immature"] >= 3 * 50 * 10**8 // 2  # the coinbases are ours
        assert n.stop() == 0
    finally:
        if n.running:
            n.kill()


@pytest.mark.parametrize("key", ["block_interval_s", "block_after_tx_s"])
def test_a_node_that_cannot_make_blocks_refuses_the_keys(tmp_path: Path, key: str) -> None:
    n = NodeProc(tmp_path, "h", chain_dir=None,
                 sections=["[chain]", 'backend = "electrum"', f'url = "tcp://127.0.0.1:{free_port()}"',
                           f"{key} = 30"])
    p = run_cli("node", "run", "--config", str(n.config), check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert key in lines[0] and str(n.config) in lines[0] and "only the owner" in lines[0], lines[0]
