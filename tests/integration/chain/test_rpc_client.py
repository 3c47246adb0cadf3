"""``RpcChainClient`` (the ``rpc`` backend) against our own RPC server over a real chain.

Each backend call answers what ``EmbeddedChain`` answers for the same chain (tip, UTXOs with
and without the mempool, transaction status, spenders with input index and height); refusals
come back as ``BroadcastRefused`` with bitcoind's reason; polling yields the events in the
embedded chain's order (``OutpointSpent`` from the mempool, then ``NewTip`` and the confirmed
spend, and on a reorg ``Reorg`` then ``NewTip``). The cookie is re-read when the server
restarts with a new one; a wrong password or a stopped server is ``ChainUnavailable``.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eschaton.chain.backend import (
    BroadcastRefused,
    ChainEvent,
    NewTip,
    OutPoint,
    OutpointSpent,
    Reorg,
    ScriptActivity,
    UnknownTransaction,
)
from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.errors import ChainUnavailable
from eschaton.chain.rpc.client import RpcChainClient, RpcCredentials
from eschaton.chain.rpc.server import RpcServer
from eschaton.core.txcodec import decode_block, decode_tx
from tests.unit.chain.helpers import Key, spend_p2wpkh

pytestmark = pytest.mark.timeout(120)
FEE = 2_000


def test_the_rpc_backend_answers_as_the_embedded_chain(tmp_path: Path) -> None:
    async def run() -> None:
        node = ChainNode(tmp_path)
        k, dest = Key(1), Key(2)
        node.mine(101, k.p2wpkh)
        local = EmbeddedChain(node, owns_node=False)
        server = RpcServer(node)
        port = await server.start()
        cookie = node.chain_dir / ".cookie"
        c = await RpcChainClient.connect(f"http://127.0.0.1:{port}", RpcCredentials(cookie=cookie), poll=3600)
        events: list[ChainEvent] = []
        c.subscribe(events.append)
        try:
            assert await c.tip() == await local.tip()
            assert index_of(node, 1)
            txid1, value = index_of(node, 1)
            op1 = OutPoint(txid1, 0)
            assert await c.get_utxo(op1) == await local.get_utxo(op1)
            assert (await c.get_utxo(op1)).height == 1  # type: ignore[union-attr]
            assert sorted(await c.list_unspent(k.p2wpkh), key=str) == sorted(await local.list_unspent(k.p2wpkh),
                                                                             key=str)
            assert await c.estimate_fee(2) == await local.estimate_fee(2) == 1000
            with pytest.raises(UnknownTransaction):
                await c.tx_status("00" * 32)
            with pytest.raises(UnknownTransaction):
                await c.get_transaction("00" * 32)

            # Refusals keep bitcoind's reason.
            with pytest.raises(BroadcastRefused) as r:
                await c.broadcast(spend_p2wpkh(txid1, 0, value, k, [(value - FEE, k.p2wpkh)], locktime=500))
            assert r.value.reason == "non-final"
            with pytest.raises(BroadcastRefused) as r:
                await c.broadcast(spend_p2wpkh("11" * 32, 0, value, k, [(value - FEE, k.p2wpkh)]))
            assert r.value.reason == "bad-txns-inputs-missingorspent"
            with pytest.raises(BroadcastRefused) as r:
                await c.broadcast(b"\x01\x00")
            assert r.value.reason == "TX decode failed"
            with pytest.raises(BroadcastRefused) as r:
                await c.broadcast(spend_p2wpkh(txid1, 0, value, k, [(value - 1, k.p2wpkh)]))
            assert r.value.reason == "min relay fee not met" and r.value.detail

            # A spend: mempool first, watched; then confirmed.
            await c.watch_outpoint(op1)
            await c.watch_script(dest.p2wpkh)
            raw = spend_p2wpkh(txid1, 0, value, k, [(value - FEE, dest.p2wpkh)])
            txid = await c.broadcast(raw)
            assert await c.get_utxo(op1) is None
            assert await c.tx_status(txid) == await local.tx_status(txid)
            assert (await c.spender(op1)) == (await local.spender(op1))
            assert await c.list_unspent(dest.p2wpkh) == await local.list_unspent(dest.p2wpkh)
            assert (await c.list_unspent(dest.p2wpkh))[0].height is None
            await c.poll_once()
            assert events == [OutpointSpent(await local.spender(op1)),  # type: ignore[arg-type]
                              ScriptActivity(dest.p2wpkh, txid, None)]
            events.clear()
            [bh] = await c.mine(1, Key(3).p2wpkh)  # this process is the owner's user
            st = await c.tx_status(txid)
            assert st == await local.tx_status(txid) and (st.height, st.block_hash) == (102, bh)
            sp = await c.spender(op1)
            assert sp == await local.spender(op1) and sp is not None and sp.height == 102
            assert await c.get_transaction(txid) == raw
            await c.poll_once()
            tip = await local.tip()
            assert events[0] == NewTip(tip) and OutpointSpent(sp) in events
            assert ScriptActivity(dest.p2wpkh, txid, 102) in events

            # A reorg: a longer branch from 101.
            events.clear()
            fork = node.index.block_at(101)  # type: ignore[union-attr]
            assert fork is not None
            new = node.mine_branch(fork.hash, 2)
            await c.poll_once()
            assert events[0] == Reorg(101, (bh,))
            assert events[1] == NewTip(await local.tip()) and (await c.tip()).block_hash == new[-1]
            assert (await c.tx_status(txid)).in_mempool  # back in the mempool, as the chain has it

            # The server restarts with a new cookie: the client reads it again.
            await server.stop()
            with pytest.raises(ChainUnavailable):
                await c.tip()
            server = RpcServer(node, port)
            await server.start()
            assert (await c.tip()).block_hash == new[-1]
            bad = RpcChainClient(f"http://127.0.0.1:{port}", RpcCredentials("who", "wrong"))
            with pytest.raises(ChainUnavailable, match="refused our credentials"):
                await bad.tip()
            await bad.close()
        finally:
            await c.close()
            await server.stop()
            local.close_sync()
            node.close()

    asyncio.run(run())


def index_of(node: ChainNode, height: int) -> tuple[str, int]:
    """The coinbase txid and value at ``height``."""
    assert node.index is not None
    tx = decode_block(node.index.raw_block(height) or b"").txs[0]
    assert decode_tx(tx.raw).txid == tx.txid
    return tx.txid, tx.outputs[0].value
