"""The node's Electrum client (``backend = "electrum"``) as an SPV client of the real ElectrumX
(PyPI ``e-x`` 2.0.0) indexing the embedded chain through our JSON-RPC.

- It syncs and verifies the headers, proves every confirmation it reports with a merkle proof
  against them, sees a watched outpoint spent (mempool, then confirmed), follows a reorg that
  drops the spend's block (``Reorg`` before ``NewTip``; the spend is unconfirmed again), and a
  restart starts from its stored headers.
- Servers that lie are dropped with one log line and the next configured one is used: one
  serving a header that does not link (caught while syncing), one serving a merkle proof that
  does not match the header (caught when a confirmation is asked for). They sit in front of
  the honest ElectrumX as proxies that change one answer each.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiorpcx import RPCSession, connect_rs, serve_rs

from eschaton.chain.backend import ChainEvent, NewTip, OutpointSpent, Reorg
from eschaton.chain.electrum.spv import SpvHeaders
from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.resilient import ReopeningChain
from eschaton.chain.rpc.server import RpcServer
from tests.integration.chain.test_electrumx import until
from tests.integration.electrumx import electrumx
from tests.unit.chain.helpers import Key, spend_p2wpkh

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
FEE = 2_000


class Liar:
    """A proxy in front of an Electrum server that changes one kind of answer."""

    def __init__(self, upstream: int, tamper: str) -> None:
        self.upstream = upstream
        self.tamper = tamper
        self.server: Any = None
        self.port = 0

    async def start(self) -> tuple[str, int]:
        liar = self

        class Session(RPCSession):  # type: ignore[misc]
            up: Any = None

            async def handle_request(self, request: Any) -> Any:
                if self.up is None:
                    self.up = await connect_rs("127.0.0.1", liar.upstream, session_factory=RPCSession).__aenter__()
                result = await self.up.send_request(request.method, list(request.args))
                return liar.change(request.method, result)

        self.server = await serve_rs(Session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return ("127.0.0.1", self.port)

    def change(self, method: str, result: Any) -> Any:
        if self.tamper == "headers" and method == "blockchain.block.headers" and len(result["headers"]) > 60:
            h = bytearray(bytes.fromhex(result["headers"][50]))
            h[4] ^= 1  # header 51 names another block below it
            result["headers"][50] = h.hex()
        if self.tamper == "merkle" and method == "blockchain.transaction.get_merkle":
            result["merkle"] = ["00" * 32, *result["merkle"][1:]]  # a sibling that is not in the block
        return result

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def test_spv_client_on_electrumx(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eschaton")

    async def run() -> None:
        node = ChainNode(tmp_path / "node")
        k, dest = Key(1), Key(2)
        node.mine(101, k.p2wpkh)
        rpc = RpcServer(node, user="ex", password="pw")
        rpc_port = await rpc.start()
        headers_file = tmp_path / "spv" / "headers.sqlite"
        async with electrumx(tmp_path, f"http://ex:pw@127.0.0.1:{rpc_port}/") as ex_port:
            ex = ("127.0.0.1", ex_port)
            bad_headers, bad_merkle = Liar(ex_port, "headers"), Liar(ex_port, "merkle")
            liars = [await bad_headers.start(), await bad_merkle.start()]

            async def synced() -> Any:
                async with connect_rs(*ex, session_factory=RPCSession) as s:
                    await s.send_request("server.version", ["probe", "1.4"])
                    return (await s.send_request("blockchain.headers.subscribe", []))["height"] == 101

            await until("ElectrumX to sync to 101", synced)
            chain = await ReopeningChain.electrum([*liars, ex], headers_file, reconnect_timeout=5.0)
            events: list[ChainEvent] = []
            chain.subscribe(events.append)
            try:
                # The first server's headers do not link: dropped while syncing.
                assert f"dropping Electrum server 127.0.0.1:{bad_headers.port}: header 51: does not link" \
                    in caplog.text
                assert (await chain.tip()).block_hash == node.tip().block_hash

                # The second lies about a proof: dropped when asked; the answer comes from ElectrumX.
                coins = await chain.list_unspent(k.p2wpkh)
                assert f"dropping Electrum server 127.0.0.1:{bad_merkle.port}: merkle proof for" in caplog.text
                assert len(coins) == 101 and all(c.coinbase and c.height for c in coins)
                assert sorted(c.height or 0 for c in coins) == list(range(1, 102))

                # A watched coin spent: in the mempool, then confirmed in a block we verified.
                coin = next(c for c in coins if c.height == 1)
                await chain.watch_outpoint(coin.outpoint)
                raw = spend_p2wpkh(coin.outpoint.txid, 0, coin.value, k, [(coin.value - FEE, dest.p2wpkh)])
                txid = await chain.broadcast(raw)
                await until("the spend in the mempool", lambda: chain.spender(coin.outpoint))
                assert (await chain.tx_status(txid)).in_mempool
                [bh] = node.mine(1)

                async def confirmed() -> bool:
                    st = await chain.tx_status(txid)
                    return st.confirmations == 1 and st.block_hash == bh

                await until("the spend confirmed", confirmed)
                sp = await chain.spender(coin.outpoint)
                assert sp is not None and sp.txid == txid and sp.height == 102
                assert any(isinstance(e, OutpointSpent) and e.spend.height == 102 for e in events)

                # A reorg drops block 102: Reorg, then NewTip; the spend is unconfirmed again.
                fork = node.index.block_at(101) if node.index is not None else None
                assert fork is not None
                new = node.mine_branch(fork.hash, 3)
                await until("the reorg followed", lambda: asyncio.sleep(0, (events and events[-1]) and any(
                    isinstance(e, NewTip) and e.tip.block_hash == new[-1] for e in events)))
                i = next(i for i, e in enumerate(events) if isinstance(e, Reorg))
                assert events[i] == Reorg(101, (bh,))
                assert any(isinstance(e, NewTip) and e.tip.height == 104 for e in events[i + 1:])
                st = await chain.tx_status(txid)
                assert st.confirmations == 0 and st.in_mempool
                sp = await chain.spender(coin.outpoint)
                assert sp is not None and sp.height is None
            finally:
                await chain.close()
                for liar in (bad_headers, bad_merkle):
                    await liar.stop()

            # A restart starts from the stored headers.
            stored = SpvHeaders(headers_file, "regtest")
            assert stored.chain.height == 104 and stored.chain.tip_hash() == node.tip().block_hash
            stored.close()
        await rpc.stop()
        node.close()

    try:
        asyncio.run(run())
    except BaseException:
        log = tmp_path / "electrumx.log"
        if log.exists():
            print(log.read_text()[-3000:])
        raise
