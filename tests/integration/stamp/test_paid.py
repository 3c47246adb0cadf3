"""Paid stamps between real node processes on the embedded chain.

b sells timestamps at PRICE sat per digest and commits its rounds; a stamps files through b
(``eschaton stamp FILE... --upstream b``) over their trade channel: a quote above
``--max-price`` is refused with nothing paid, a paid batch costs a exactly PRICE * digests
(b's side of the channel grows by that much), the stock ``ots`` client verifies the proofs a
gets back, and stamping the same files again (after a crash of a, too) pays nothing; a batch too small for a payment
(below the dust limit) is refused before anything is paid. Then a peer of b's own making (a
``NetNode`` in this process playing the stamp service) sends unpaid requests, and a's
preimage for a batch of its own: b refuses each one and accepts nothing.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from eschaton.config import parse_config
from eschaton.core.link.identity import NodeId
from eschaton.core.wire.codec import make
from eschaton.net.mesh import NetNode
from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    free_port,
    mirrored,
    open_channel,
    poll,
)
from tests.integration.stamp.helpers import fund, ots_exe, ots_verify, rpc_port, stamp_node
from tests.routes import Recorder, router

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

PRICE = 200
CAPACITY = 200_000


def _received(a: NodeProc, b: NodeProc, cid: str) -> int:
    """b's side of the channel (both sides agreeing)."""
    return int(mirrored(a, b, cid)[1]["local_sat"])


def test_stamps_through_a_paid_upstream(cluster: Cluster, tmp_path: Path) -> None:
    ots_exe()
    url_b = f"tcp://127.0.0.1:{free_port()}"
    b = stamp_node(cluster, "b", owner=True, listen=(url_b,), stamp=(f"price_sat = {PRICE}",))
    b.start().wait_ready()
    port = rpc_port(cluster)
    fund(cluster, b)
    a = stamp_node(cluster, "a", owner=False, listen=(f"tcp://127.0.0.1:{free_port()}",), peers=((b.id, url_b),))
    a.start().wait_ready()
    poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")
    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
    cid = open_channel(cluster.chain, a, b, CAPACITY)
    assert b.cli("stamp", "status")["price_sat"] == PRICE

    files = []
    for i in range(3):
        f = tmp_path / f"deed{i}.txt"
        f.write_text(f"deed {i}\n")
        files.append(str(f))
    start = _received(a, b, cid)

    # Less than a payment can carry (two digests: 400 sat, below the 546 sat dust limit).
    r = a.cli_fail("stamp", *files[:2], "--upstream", b.id, "--max-price", str(PRICE))
    assert "below_dust: 2 digests at 200 sat cost less than the 546 sat a payment needs: send at least 3" \
        in r.stderr + r.stdout
    # Above the max price: refused before anything is paid.
    r = a.cli_fail("stamp", *files, "--upstream", b.id, "--max-price", str(PRICE - 1))
    assert f"price {PRICE} sat per digest is above the max price {PRICE - 1}: nothing paid" in r.stderr + r.stdout
    assert _received(a, b, cid) == start
    assert b.cli("stamp", "status")["earned"] == {"payments": 0, "digests": 0, "sat": 0}

    # Paid: exactly PRICE per digest, acknowledged once durable at b.
    out = a.cli("stamp", *files, "--upstream", b.id, "--max-price", str(PRICE))
    assert [x["state"] for x in out] == ["pending"] * 3
    assert _received(a, b, cid) == start + PRICE * 3
    assert b.cli("stamp", "status")["earned"] == {"payments": 1, "digests": 3, "sat": PRICE * 3}
    assert a.cli("stamp", "status")["spent"] == {"batches": 1, "digests": 3, "sat": PRICE * 3}

    # The payer crashes after paying: its batch and digests are on disk, so after a restart the
    # same request pays nothing, and the proofs still come back.
    a.kill()
    a.start().wait_ready()
    poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked again")
    again = a.cli("stamp", *files, "--upstream", b.id, "--max-price", str(PRICE))
    assert [x["state"] for x in again] == ["pending"] * 3
    assert _received(a, b, cid) == start + PRICE * 3

    # b commits its round; the proofs come back to a, and the stock client verifies them.
    poll(lambda: b.cli("stamp", "status")["rounds"]["committed"] == 1, "b's commitment")
    height = cluster.chain.mine(1)
    proven = poll(lambda: (r := a.cli("stamp", *files, "--upstream", b.id, "--wait", "5"))
                  and all(x["state"] == "proven" for x in r) and r, "a's proofs through b", timeout=60)
    for item in proven:
        rc, text = ots_verify(port, Path(item["ots"]))
        assert rc == 0 and f"Success! Bitcoin block {height} attests existence" in text, text

    # The same request again (and the polling above) paid nothing more.
    a.cli("stamp", *files, "--upstream", b.id, "--max-price", str(PRICE))
    assert _received(a, b, cid) == start + PRICE * 3
    assert b.cli("stamp", "status")["earned"]["payments"] == 1
    batches = a.api("stamp.batches")["batches"]
    paid = [x for x in batches if x["state"] == "accepted"]
    assert len(paid) == 1 and paid[0]["amount_sat"] == PRICE * 3
    preimage = bytes.fromhex(a.api("routing.payment", id=paid[0]["payment"])["preimage"])

    _unpaid_and_replayed_requests(tmp_path, b, url_b, preimage)
    assert b.cli("stamp", "status")["earned"] == {"payments": 1, "digests": 3, "sat": PRICE * 3}
    assert b.cli("stamp", "status")["waiting"] == 0


def _unpaid_and_replayed_requests(tmp_path: Path, b: NodeProc, url_b: str, preimage: bytes) -> None:
    cfg = parse_config(f'''
[node]
datadir = "{tmp_path / 'raw'}"
[network.discovery]
enabled = false
''', "raw.toml")
    os.makedirs(tmp_path / "raw", mode=0o700)

    async def scenario() -> None:
        peer = Recorder("stamp")  # runs the stamp service: records what b sends
        net = await NetNode.new(cfg, router=router(peer))
        try:
            session = await net.connect(NodeId.from_hex(b.id), url_b)
            await asyncio.wait_for(peer.opened_event.wait(), 20)
            digest = hashlib.sha256(b"not paid for").digest()

            async def answer(msg: object) -> str:
                await session.send(msg)  # type: ignore[arg-type]
                got = await asyncio.wait_for(peer.inbox.get(), 10)
                assert got.name == "stamp_answer", got
                return f"{got['code']}: {got['detail']}"

            ref = os.urandom(32)
            got = await answer(make("stamp_paid_submit", ref=ref, digests=digest, preimage=b""))
            assert got.startswith(f"unpaid: the price is {PRICE} sat per digest"), got
            got = await answer(make("stamp_submit", digest=digest))
            assert got.startswith("unpaid:"), got
            # a's preimage bought a's batch: from another peer it buys nothing
            got = await answer(make("stamp_paid_submit", ref=ref, digests=digest, preimage=preimage))
            assert got == "unpaid: no payment request of ours has this preimage", got
            got = await answer(make("stamp_paid_submit", ref=ref, digests=digest, preimage=os.urandom(32)))
            assert got.startswith("unpaid:"), got
        finally:
            await net.close()

    asyncio.run(scenario())


ROOT_PRICE = 600  # a round's root is a batch of one: at least the 546 sat dust limit


def test_a_round_root_is_bought_from_a_paid_upstream(cluster: Cluster, tmp_path: Path) -> None:
    """``[stamp] upstream`` with a price: a's round root is one paid batch (ROOT_PRICE, at most
    ``max_price_sat``), paid once however often a resends it, and a's proofs verify."""
    ots_exe()
    url_b = f"tcp://127.0.0.1:{free_port()}"
    b = stamp_node(cluster, "b", owner=True, listen=(url_b,), stamp=(f"price_sat = {ROOT_PRICE}",))
    b.start().wait_ready()
    port = rpc_port(cluster)
    fund(cluster, b)
    a = stamp_node(cluster, "a", owner=False, upstream=b.id, listen=(f"tcp://127.0.0.1:{free_port()}",),
                   peers=((b.id, url_b),), stamp=(f"max_price_sat = {ROOT_PRICE}",))
    a.start().wait_ready()
    poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")
    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
    cid = open_channel(cluster.chain, a, b, CAPACITY)
    start = _received(a, b, cid)

    files = []
    for i in range(4):
        f = tmp_path / f"page{i}.txt"
        f.write_text(f"page {i}\n")
        files.append(str(f))
    assert all(x["state"] == "pending" for x in a.cli("stamp", *files))
    poll(lambda: b.cli("stamp", "status")["earned"]["payments"] == 1, "b paid for a's round root")
    assert b.cli("stamp", "status")["earned"] == {"payments": 1, "digests": 1, "sat": ROOT_PRICE}
    assert _received(a, b, cid) == start + ROOT_PRICE
    poll(lambda: b.cli("stamp", "status")["rounds"]["committed"] == 1, "b's commitment")
    height = cluster.chain.mine(1)
    out = poll(lambda: (r := a.cli("stamp", *files, "--wait", "5")) and all(x["state"] == "proven" for x in r) and r,
               "a's proofs through b", timeout=60)
    for item in out:
        rc, text = ots_verify(port, Path(item["ots"]))
        assert rc == 0 and f"Success! Bitcoin block {height} attests existence" in text, text
    assert _received(a, b, cid) == start + ROOT_PRICE  # the resends until the proof paid nothing more
    assert a.cli("stamp", "status")["spent"] == {"batches": 1, "digests": 1, "sat": ROOT_PRICE}


def _close_sum(n: NodeProc) -> int:
    """What a cooperative close of all of n's channels would pay n now."""
    return sum(int(c["close_sat"]) for c in n.api("channel.list"))


def _open_for(cluster: Cluster, opener: NodeProc, acceptor: NodeProc, lifetime: int) -> str:
    return open_channel(cluster.chain, opener, acceptor, CAPACITY, "--lifetime", str(lifetime))


def test_stamps_paid_two_hops_away(cluster: Cluster, tmp_path: Path) -> None:
    """a has no channel with b, only with c, which has one with b: a's payment for b's stamps
    goes a -> c -> b (the request signed by b, paid through routing); b gets exactly the price
    of the digests, c its routing fee, a pays both, once."""
    ots_exe()
    urls = {n: f"tcp://127.0.0.1:{free_port()}" for n in "abc"}
    b = stamp_node(cluster, "b", owner=True, listen=(urls["b"],), stamp=(f"price_sat = {ROOT_PRICE}",))
    b.start().wait_ready()
    port = rpc_port(cluster)
    fund(cluster, b)
    c = stamp_node(cluster, "c", owner=False, listen=(urls["c"],), peers=((b.id, urls["b"]),))
    c.start().wait_ready()
    a = stamp_node(cluster, "a", owner=False, listen=(urls["a"],), peers=((b.id, urls["b"]), (c.id, urls["c"])))
    a.start().wait_ready()
    poll(lambda: {b.id, c.id} <= a.linked() and b.id in c.linked(), "a linked to b and c, c to b")
    for n in (a, c):
        cluster.chain.mine(1, to=n.wallet("address")["address"])
    cluster.chain.mine(100)
    for n in (a, c):
        poll(lambda n=n: n.wallet("balance")["spendable"] > 0, f"{n.name} has spendable coins")
    cids = [_open_for(cluster, c, b, 1008), _open_for(cluster, a, c, 1108)]  # the payer's channel lives longer
    for n in (a, b, c):
        poll(lambda n=n: len(n.api("routing.graph")["channels"]) == 2, f"{n.name} knows both channels")
    before = {n.name: _close_sum(n) for n in (a, b, c)}

    f = tmp_path / "will.txt"
    f.write_text("the will\n")
    assert a.cli("stamp", str(f), "--upstream", b.id, "--max-price", str(ROOT_PRICE))[0]["state"] == "pending"
    (batch,) = a.api("stamp.batches")["batches"]
    paid = a.api("routing.payment", id=batch["payment"])
    assert paid["state"] == "complete" and paid["amount_sat"] == ROOT_PRICE and paid["fee_sat"] > 0
    poll(lambda: mirrored(a, c, cids[1])[0]["escrows"] == 0 == mirrored(c, b, cids[0])[0]["escrows"],
         "the escrows settled")
    delta = {n.name: _close_sum(n) - before[n.name] for n in (a, b, c)}
    assert delta == {"a": -(ROOT_PRICE + paid["fee_sat"]), "b": ROOT_PRICE, "c": paid["fee_sat"]}
    assert b.cli("stamp", "status")["earned"] == {"payments": 1, "digests": 1, "sat": ROOT_PRICE}

    poll(lambda: b.cli("stamp", "status")["rounds"]["committed"] == 1, "b's commitment")
    height = cluster.chain.mine(1)
    (item,) = poll(lambda: (r := a.cli("stamp", str(f), "--upstream", b.id, "--wait", "5"))
                   and r[0]["state"] == "proven" and r, "a's proof", timeout=60)
    rc, text = ots_verify(port, Path(item["ots"]))
    assert rc == 0 and f"Success! Bitcoin block {height} attests existence" in text, text
    assert {n.name: _close_sum(n) - before[n.name] for n in (a, b, c)} == delta  # nothing paid again
