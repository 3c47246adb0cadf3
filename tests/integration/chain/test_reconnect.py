"""A node on a remote chain server (``[chain] backend = "electrum"``) survives the server
restarting: calls reconnect, watches are carried over, and spends are still reported."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eschaton.chain.backend import ChainEvent, OutpointSpent
from eschaton.chain.electrum.server import ElectrumServer
from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.errors import ChainUnavailable
from eschaton.chain.resilient import ReopeningChain
from tests.unit.chain.helpers import Key, spend_p2wpkh

pytestmark = pytest.mark.timeout(120)


async def _until(pred, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_remote_chain_server_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = ChainNode(tmp_path)
        server = ElectrumServer(node)
        port = await server.start()
        chain = await ReopeningChain.electrum([("127.0.0.1", port)], tmp_path / "spv" / "headers.sqlite",
                                              reconnect_timeout=1.0)
        events: list[ChainEvent] = []
        chain.subscribe(events.append)
        k = Key(1)
        try:
            node.mine(101, k.p2wpkh)  # blocks are the owner's to make, not a TCP client's
            coin = next(u for u in await chain.list_unspent(k.p2wpkh) if u.coinbase)
            await chain.watch_outpoint(coin.outpoint)

            # The server goes away: a call fails with a clear error once reconnecting times out.
            await server.stop()
            with pytest.raises(ChainUnavailable):
                await chain.tip()

            # It comes back on the same port: the next call reconnects and works.
            server = ElectrumServer(node, port=port)
            await server.start()
            assert (await chain.tip()).height == 101

            # The watch was carried over to the new connection.
            raw = spend_p2wpkh(coin.outpoint.txid, coin.outpoint.vout, coin.value, k,
                               [(coin.value - 2_000, Key(2).p2wpkh)])
            txid = await chain.broadcast(raw)
            node.mine(1)
            await _until(lambda: any(isinstance(e, OutpointSpent) and e.spend.txid == txid
                                     and e.spend.height == 102 for e in events), "the spend notification")
        finally:
            await chain.close()
            await server.stop()
            node.close()

    asyncio.run(scenario())
