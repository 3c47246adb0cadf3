"""The server speaks standard Electrum to a plain aiorpcx client (no Eschaton client code)."""
from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from aiorpcx import RPCError, RPCSession, connect_rs

from eschaton.chain.electrum.server import ElectrumServer
from eschaton.chain.embedded.engine import ChainNode
from tests.unit.chain.helpers import Key, spend_p2wpkh


class _Plain(RPCSession):  # type: ignore[misc]
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.notes: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def handle_request(self, request: Any) -> None:
        self.notes.put_nowait((request.method, request.args))


def _sh(spk: bytes) -> str:
    return hashlib.sha256(spk).digest()[::-1].hex()


async def _next(s: _Plain, method: str) -> Any:
    while True:
        m, args = await asyncio.wait_for(s.notes.get(), 10)
        if m == method:
            return args


def test_standard_methods_and_notifications(tmp_path: Path) -> None:
    async def run() -> None:
        node = ChainNode(tmp_path)
        server = ElectrumServer(node)
        port = await server.start()
        assert (tmp_path / "chain" / "electrum.port").read_text().strip() == str(port)
        k, dest = Key(1), Key(9)
        try:
            async with connect_rs("127.0.0.1", port, session_factory=_Plain) as s:
                name, proto = await s.send_request("server.version", ["test", "1.4"])
                assert proto == "1.4"  # the version asked for, not the server's highest
                assert await s.send_request("server.ping") is None
                head = await s.send_request("blockchain.headers.subscribe")
                assert head["height"] == 0 and len(bytes.fromhex(head["hex"])) == 80
                assert await s.send_request("blockchain.scripthash.subscribe", [_sh(dest.p2wpkh)]) is None

                node.mine(100, k.p2wpkh)
                node.mine(1, k.p2wpkh)
                heights = []
                while not heights or heights[-1] < 101:
                    heights.append((await _next(s, "blockchain.headers.subscribe"))[0]["height"])
                assert heights == [100, 101]  # one notification per tip change, as ElectrumX does
                hdr = await s.send_request("blockchain.block.header", [101])
                assert hashlib.sha256(hashlib.sha256(bytes.fromhex(hdr)).digest()).digest()[::-1].hex() == node.tip().block_hash

                utxos = await s.send_request("blockchain.scripthash.listunspent", [_sh(k.p2wpkh)])
                assert len(utxos) == 101 and all(u["value"] == 50 * 10**8 for u in utxos)
                bal = await s.send_request("blockchain.scripthash.get_balance", [_sh(k.p2wpkh)])
                assert bal == {"confirmed": 101 * 50 * 10**8, "unconfirmed": 0}
                first = min(utxos, key=lambda u: u["height"])
                op = await s.send_request("blockchain.outpoint.subscribe", [first["tx_hash"], first["tx_pos"]])
                assert op == {"height": 1}

                raw = spend_p2wpkh(first["tx_hash"], 0, first["value"], k, [(first["value"] - 2000, dest.p2wpkh)])
                txid = await s.send_request("blockchain.transaction.broadcast", [raw.hex()])
                sh_note = await _next(s, "blockchain.scripthash.subscribe")
                assert sh_note[0] == _sh(dest.p2wpkh) and sh_note[1] is not None
                op_note = await _next(s, "blockchain.outpoint.subscribe")
                assert op_note == [[first["tx_hash"], 0], {"height": 1, "spender_txhash": txid, "spender_height": 0}]
                assert await s.send_request("blockchain.transaction.get", [txid]) == raw.hex()
                mem = await s.send_request("blockchain.scripthash.listunspent", [_sh(dest.p2wpkh)])
                assert mem == [{"tx_hash": txid, "tx_pos": 0, "height": 0, "value": first["value"] - 2000,
                                "script": dest.p2wpkh.hex(), "coinbase": False}]

                node.mine(1)
                op_note = await _next(s, "blockchain.outpoint.subscribe")
                assert op_note[1]["spender_height"] == 102

                try:
                    await s.send_request("blockchain.transaction.broadcast", [raw.hex()[:-2]])
                    raise AssertionError("broadcast of a truncated tx succeeded")
                except RPCError as e:
                    assert e.message.split("\n")[2] == "TX decode failed"
                try:
                    await s.send_request("blockchain.transaction.get", ["00" * 32])
                    raise AssertionError("unknown tx found")
                except RPCError as e:
                    assert e.code == -5
                assert await s.send_request("blockchain.estimatefee", [6]) == 0.00001
                assert await s.send_request("blockchain.relayfee") == 0.00001
                try:
                    await s.send_request("blockchain.scripthash.listunspent", ["zz"])
                    raise AssertionError("bad script hash accepted")
                except RPCError as e:
                    assert e.code == 1
        finally:
            await server.stop()
            node.close()
        assert not (tmp_path / "chain" / "electrum.port").exists()

    asyncio.run(run())


def test_mining_packs_dependent_transactions(tmp_path: Path) -> None:
    """A child paying a high fee on a low-fee parent: both mined, parent first, fees to the miner."""
    node = ChainNode(tmp_path)
    try:
        k = Key(1)
        node.mine(101, k.p2wpkh)
        assert node.index is not None
        coins = sorted(node.index.coins_for_script(k.p2wpkh), key=lambda c: c.height)
        a, b = coins[0], coins[1]
        parent = node.broadcast(spend_p2wpkh(a.txid, 0, a.value, k, [(a.value - 200, k.p2wpkh)]))
        child = node.broadcast(spend_p2wpkh(parent, 0, a.value - 200, k, [(a.value - 50_200, k.p2wpkh)]))
        other = node.broadcast(spend_p2wpkh(b.txid, 0, b.value, k, [(b.value - 5_000, k.p2wpkh)]))
        miner = Key(3)
        (bh,) = node.mine(1, miner.p2wpkh)
        raw = node.index.raw_block(node.tip().height)
        assert raw is not None
        from eschaton.core.txcodec import decode_block

        txids = [t.txid for t in decode_block(raw).txs[1:]]
        assert set(txids) == {parent, child, other}
        assert txids.index(parent) < txids.index(child)
        reward = node.index.coins_for_script(miner.p2wpkh)
        assert [c.value for c in reward] == [50 * 10**8 + 200 + 50_000 + 5_000]
        assert len(node.mempool) == 0 and node.tip().block_hash == bh
    finally:
        node.close()
