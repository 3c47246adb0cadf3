"""The SPV client (``backend = "electrum"``) against our own Electrum server, which speaks the
standard protocol too: headers verified from genesis, confirmations proven with ``get_merkle``,
a watched outpoint's spend reported (mempool, then confirmed), and a reorg that drops the
spend's block: ``Reorg`` then ``NewTip``, the spend unconfirmed again, and its old proof (from
the losing branch) no longer believed."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eschaton.chain.backend import ChainEvent, NewTip, OutpointSpent, Reorg
from eschaton.chain.electrum.server import ElectrumServer
from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.resilient import ReopeningChain
from tests.unit.chain.helpers import Key, spend_p2wpkh

pytestmark = pytest.mark.timeout(120)


async def _until(pred, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await pred():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_spv_client_on_our_server(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = ChainNode(tmp_path / "node")
        k = Key(1)
        node.mine(101, k.p2wpkh)
        server = ElectrumServer(node)
        port = await server.start()
        chain = await ReopeningChain.electrum([("127.0.0.1", port)], tmp_path / "spv" / "headers.sqlite")
        events: list[ChainEvent] = []
        chain.subscribe(events.append)
        try:
            assert (await chain.tip()).block_hash == node.tip().block_hash
            coins = await chain.list_unspent(k.p2wpkh)
            assert sorted(c.height or 0 for c in coins) == list(range(1, 102))
            coin = next(c for c in coins if c.height == 1)
            await chain.watch_outpoint(coin.outpoint)
            raw = spend_p2wpkh(coin.outpoint.txid, 0, coin.value, k, [(coin.value - 2_000, Key(2).p2wpkh)])
            txid = await chain.broadcast(raw)

            async def spent_in_mempool() -> bool:
                return any(isinstance(e, OutpointSpent) and e.spend.txid == txid and e.spend.height is None
                           for e in events)

            await _until(spent_in_mempool, "the spend notified from the mempool")
            [bh] = node.mine(1)

            async def confirmed() -> bool:
                st = await chain.tx_status(txid)
                return st.confirmations == 1 and st.block_hash == bh

            await _until(confirmed, "the spend proven in block 102")
            fork = node.index.block_at(101) if node.index is not None else None
            assert fork is not None
            new = node.mine_branch(fork.hash, 2)

            async def reorganised() -> bool:
                return any(isinstance(e, NewTip) and e.tip.block_hash == new[-1] for e in events)

            await _until(reorganised, "the reorg followed")
            i = next(i for i, e in enumerate(events) if isinstance(e, Reorg))
            assert events[i] == Reorg(101, (bh,))
            assert any(isinstance(e, NewTip) and e.tip.height == 103 for e in events[i + 1:])
            st = await chain.tx_status(txid)
            assert st.confirmations == 0 and st.in_mempool
        finally:
            await chain.close()
            await server.stop()
            node.close()

    asyncio.run(scenario())
