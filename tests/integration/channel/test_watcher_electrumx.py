"""The channel watcher, unchanged, on the SPV client (``backend = "electrum"``) against the real
ElectrumX indexing the embedded chain: the counterparty broadcasts an older version; our watcher
learns of it only through ElectrumX (the funding script's history, the spender found by
``transaction.get``), answers with the newest version, which replaces the old one in the mempool,
and once that confirms (a merkle proof against headers the client verified) the channel is
closed and we are paid what the newest version gives us.

The channel is set up on the in-process chain first (as ``test_channel_chain`` does); then one
event loop serves the chain's JSON-RPC to ElectrumX and runs our watcher on the SPV client.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eschaton.chain.resilient import ReopeningChain
from eschaton.chain.rpc.server import RpcServer
from eschaton.channel.watcher import ChannelWatcher
from eschaton.core import tx as T
from tests.integration.chain.test_electrumx import until
from tests.integration.channel.harness import Net
from tests.integration.channel.test_channel_chain import _cheater, _older_versions
from tests.integration.electrumx import electrumx

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_watcher_on_electrumx_answers_an_older_version(net: Net, tmp_path: Path) -> None:
    _cheater(net, "b")
    net.open()
    net.do("a", "pay", 100_000)
    net.do("b", "pay", 40_000)  # a holds the newest version (b signed it)
    newest = net.ch("a").current
    olds = _older_versions(net, "b")
    target = max(T.parse_tx(r).locktime for r in olds[-1:])
    while net.height < target:  # a is offline: only b's node follows the chain
        net.chain.node.mine(1)
        asyncio.run(net.b.watcher.sync())

    async def scenario() -> None:
        rpc = RpcServer(net.chain.node, user="ex", password="pw")
        port = await rpc.start()
        try:
            async with electrumx(tmp_path / "ex", f"http://ex:pw@127.0.0.1:{port}/") as ex_port:
                spv = await ReopeningChain.electrum([("127.0.0.1", ex_port)], tmp_path / "spv.sqlite")
                try:
                    async def caught_up() -> bool:
                        return (await spv.tip()).block_hash == net.chain.node.tip().block_hash

                    await until("the SPV client at the chain's tip", caught_up)
                    watcher = ChannelWatcher(spv, net.a.ep)
                    old_txid = net.chain.node.broadcast(olds[-1])  # b cheats

                    async def answered() -> bool:
                        await watcher.sync()
                        tried = [r for r in watcher.results if r.label == f"version {newest.number}"]
                        return bool(tried and tried[-1].refused is None)

                    await until("a's watcher to answer through ElectrumX", answered)
                    assert net.ch("a").state.name == "FORCE_CLOSING"
                    assert old_txid not in net.chain.node.mempool  # replaced by the newest version
                    net.chain.node.mine(1)

                    async def closed() -> bool:
                        await watcher.sync()
                        return net.ch("a").state.name == "CLOSED"

                    await until("a's channel CLOSED on the proven confirmation", closed)
                finally:
                    await spv.close()
        finally:
            await rpc.stop()

    asyncio.run(scenario())
    assert net.a.paid_to_payout() == newest.balances[0]
