"""Three node processes on loopback find each other by discovery alone, link pairwise, and run
channels a-b and b-c funded on one shared embedded chain: payments both ways, an escrow
committed and one rolled back, a cooperative close and a unilateral one, each confirmed, with the
wallets paid exactly the channels' final balances. Everything is driven through the CLI."""
from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    free_port,
    mirrored,
    open_channel,
    pay,
    poll,
)

pytestmark = pytest.mark.timeout(300)

AB_CAPACITY = 5_000_000
BC_CAPACITY = 3_000_000


def _broadcast_txid(node: NodeProc, label: str, cid: str, start: int = 0) -> str:
    """The txid from the node's log line ``broadcast <label> for channel <cid12>: <txid>``."""
    prefix = f"broadcast {label}"
    rec = node.wait_log(lambda r: str(r.get("msg", "")).startswith(prefix)
                        and f"channel {cid[:12]}:" in str(r.get("msg", ""))
                        and "refused" not in str(r.get("msg", "")),
                        f"{prefix} of {cid[:12]}", start=start)
    return str(rec["msg"]).rsplit(": ", 1)[1]


def _escrow_commit(payer: NodeProc, payee: NodeProc, cid: str, amount: int) -> None:
    _, payee0 = mirrored(payer, payee, cid)
    e = payer.cli("channel", "escrow", cid, str(amount))
    assert e["escrows"] == 1 and isinstance(e["escrow_id"], int) and len(e["hash"]) == 64
    _, payee1 = mirrored(payer, payee, cid)
    assert payee1["escrows"] == 1 and payee1["local_sat"] == payee0["local_sat"]  # locked, not paid
    s = payer.cli("channel", "settle", cid, str(e["escrow_id"]))
    assert s["escrows"] == 0
    _, payee2 = mirrored(payer, payee, cid)
    assert payee2["local_sat"] == payee0["local_sat"] + amount


def _escrow_rollback(payer: NodeProc, payee: NodeProc, cid: str, amount: int, capacity: int) -> None:
    payer0, payee0 = mirrored(payer, payee, cid)
    e = payer.cli("channel", "escrow", cid, str(amount))
    locked_fee = e["fee_sat"] - payer0["fee_sat"]
    assert e["local_sat"] == payer0["local_sat"] - amount - locked_fee
    # Only the payee may hand an escrow back; the payer's attempt is refused cleanly.
    refused = payer.cli_fail("channel", "settle", cid, str(e["escrow_id"]), "--rollback")
    assert "payee" in refused.stderr and "Traceback" not in refused.stderr
    r = payee.cli("channel", "settle", cid, str(e["escrow_id"]), "--rollback")
    assert r["escrows"] == 0 and r["local_sat"] == payee0["local_sat"]  # the payee gained nothing
    payer2, payee2 = mirrored(payer, payee, cid)
    # The payer gets the escrow back less the fee step of the version that returned it.
    assert payer2["local_sat"] == e["local_sat"] + amount - (payer2["fee_sat"] - e["fee_sat"])
    assert payer2["local_sat"] + payer2["remote_sat"] + payer2["fee_sat"] == capacity


def _wallet_settled(node: NodeProc, expected_total: int) -> dict[str, Any] | None:
    b = node.api("wallet.balance")
    total = b["confirmed"] + b["unconfirmed"] + b["immature"]
    return b if b["unconfirmed"] == 0 and total == expected_total else None


def test_three_nodes_discover_link_trade_and_close(cluster: Cluster) -> None:
    disc = free_port(socket.SOCK_DGRAM)
    a, b, c = (cluster.node(n, listen=["tcp://127.0.0.1:0"], discovery_port=disc) for n in "abc")
    a.start().wait_ready()  # the first node owns the shared chain and serves it to the others
    for n in (b, c):
        n.start()
    for n in (b, c):
        n.wait_ready()
    nodes = (a, b, c)

    # Discovery only (no static peers): every pair links, one link per pair.
    for n in nodes:
        others = {m.id for m in nodes if m is not n}
        poll(lambda n=n, others=others: n.linked() >= others, f"{n.name} linked to both others")
    for n in nodes:
        listed = {p["id"] for p in n.cli("peer", "list") if p["linked"]}
        assert listed == {m.id for m in nodes if m is not n}
        st = n.cli("node", "status")
        assert st["id"] == n.id and st["name"] == n.name and len(st["peers"]) == 2
        # Each peer announced the services its composition root registered.
        # Every service of the wire table that these nodes run, in the table's order.
        want = ["channel", "echo", "stamp", "routing", "dht"]
        assert [p["services"] for p in n.api("peer.list") if p["linked"]] == [want] * 2
    # The echo service answers through the peer's router (registered in the composition root).
    echo = a.api("peer.echo", id=b.id, payload="through b's router")
    assert echo["id"] == b.id and echo["rtt_ms"] > 0

    # Coins: one coinbase for b, then enough blocks to a that both mature.
    cluster.chain.mine(1, to=b.wallet("address")["address"])
    cluster.chain.mine(101, to=a.wallet("address")["address"])
    for n in (a, b):
        poll(lambda n=n: n.wallet("balance")["spendable"] > 0, f"{n.name} has spendable coins")

    ab = open_channel(cluster.chain, a, b, AB_CAPACITY)
    # b-c has a short lifetime so that its unilateral close matures after a few blocks.
    bc = open_channel(cluster.chain, b, c, BC_CAPACITY, "--lifetime", "30", "--step", "2")
    for x, y, cid in ((a, b, ab), (b, c, bc)):
        vx, vy = mirrored(x, y, cid)
        assert vx["role"] == "opener" and vy["role"] == "acceptor" and vy["local_sat"] == 0
        assert vx["peer"] == y.id and vy["peer"] == x.id
        assert vx["funding_txid"] == vy["funding_txid"]
        assert cluster.chain.tx(vx["funding_txid"])["confirmations"] >= 1

    # Payments in both directions on both channels.
    pay(a, b, ab, 200_000)
    pay(b, a, ab, 50_000)
    pay(b, c, bc, 300_000)
    pay(c, b, bc, 100_000)
    pay(a, b, ab, 10_000)
    pay(b, c, bc, 20_000)

    _escrow_commit(a, b, ab, 70_000)
    _escrow_rollback(b, c, bc, 40_000, BC_CAPACITY)
    pay(c, b, bc, 5_000)
    # The version c will broadcast alone is the newest one b signed: end b-c with b paying.
    pay(b, c, bc, 7_000)

    # Cooperative close of a-b: the close pays each side exactly its channel balance ...
    va, vb = mirrored(a, b, ab)
    ta, tb = a.wallet_total(), b.wallet_total()
    mark_a, mark_b = len(a.logs), len(b.logs)
    st = a.cli("channel", "close", ab)
    assert st["state"] in ("CLOSING", "CLOSED"), st
    poll(lambda: (b.channel(ab) or {}).get("state") in ("CLOSING", "CLOSED"), "b sees a-b closing")
    try:
        close_txid = _broadcast_txid(b, "close", ab, mark_b)  # the acceptor broadcasts at once
    except AssertionError:
        close_txid = _broadcast_txid(a, "close", ab, mark_a)
    cluster.chain.mine(1)
    for n in (a, b):
        poll(lambda n=n: (n.channel(ab) or {}).get("state") == "CLOSED", f"{n.name}: a-b CLOSED")
    assert cluster.chain.tx(close_txid)["confirmations"] >= 1
    # ... plus the fee steps it paid (a reserve the close gives back): close_sat.
    assert va["close_sat"] >= va["local_sat"] and vb["close_sat"] >= vb["local_sat"], (va, vb)
    poll(lambda: _wallet_settled(a, ta + va["close_sat"]), f"a's wallet +{va['close_sat']}")
    poll(lambda: _wallet_settled(b, tb + vb["close_sat"]), f"b's wallet +{vb['close_sat']}")

    # Unilateral close of b-c by c: its best version (b's last signed update, which is also the
    # current one) becomes final at its nLockTime.
    vb, vc = mirrored(b, c, bc)
    tb, tc = b.wallet_total(), c.wallet_total()
    mark_c = len(c.logs)
    st = c.cli("channel", "close", bc, "--force")
    assert st["state"] == "FORCE_CLOSING", st
    height = cluster.chain.height()
    if height < st["locktime"]:
        cluster.chain.mine(st["locktime"] - height)
    txid = _broadcast_txid(c, f"version {vc['version']}", bc, mark_c)
    cluster.chain.mine(1)
    for n in (b, c):
        poll(lambda n=n: (n.channel(bc) or {}).get("state") == "CLOSED", f"{n.name}: b-c CLOSED")
    assert cluster.chain.tx(txid)["confirmations"] >= 1
    poll(lambda: _wallet_settled(b, tb + vb["local_sat"]), f"b's wallet +{vb['local_sat']}")
    poll(lambda: _wallet_settled(c, tc + vc["local_sat"]), f"c's wallet +{vc['local_sat']}")

    for n in nodes:
        assert n.running
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
    for n in reversed(nodes):
        assert n.stop() == 0
