"""``EmbeddedChain.start_block_production`` on a real embedded chain: a transaction entering an
empty mempool gets a block, blocks pay the given script, and a stop is final even when it lands
in the same loop turn as a chain update (the wake-up and the cancel racing)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from eschaton.chain.embedded.chain import EmbeddedChain
from eschaton.chain.embedded.engine import ChainNode
from tests.integration.chain.conftest import Funded
from tests.unit.chain.helpers import spend_p2wpkh

SPK = b"\x00\x14" + b"\x33" * 20  # a P2WPKH the blocks pay


def test_a_transaction_gets_a_block_that_pays_the_given_script(funded: Funded) -> None:
    async def go() -> None:
        chain = EmbeddedChain(funded.node, owns_node=False)
        status = chain.start_block_production(0, 0.05, lambda: SPK)
        h0 = funded.node.tip().height
        await asyncio.sleep(0.3)
        assert funded.node.tip().height == h0 and status.produced == 0  # empty mempool: nothing due
        c, k = funded.coinbase(1), funded.key
        txid = await chain.broadcast(spend_p2wpkh(c.txid, 0, c.value, k, [(c.value - 1_000, k.p2wpkh)]))
        for _ in range(100):
            if status.produced:
                break
            await asyncio.sleep(0.05)
        assert status.produced == 1 and status.last_reason == "transaction"
        assert chain.tx_status_sync(txid).height == h0 + 1 and not funded.node.mempool.entries
        assert chain.list_unspent_sync(SPK)[0].coinbase  # the coinbase paid our script
        chain.stop_auto_mining()
        assert funded.node.production is None

    asyncio.run(go())


def test_a_stop_in_the_same_turn_as_a_block_is_final(tmp_path: Path) -> None:
    async def go() -> None:
        node = ChainNode(tmp_path)
        chain = EmbeddedChain(node)
        try:
            chain.start_block_production(3600, 0, lambda: None)
            task = chain._auto_miner
            assert task is not None
            await asyncio.sleep(0.05)  # the producer sleeps until its deadline or an update
            node.mine(1)  # an update: wakes the producer (its event is set) ...
            chain.stop_auto_mining()  # ... and the stop comes in the same turn
            await asyncio.sleep(0.2)
            # Python 3.11's wait_for would return the event's result and swallow the cancel:
            # the producer would live on and make blocks on a closed chain.
            assert task.done() and task.cancelled()
        finally:
            await chain.close()

    asyncio.run(go())
