"""The Electrum protocol by its specification, method by method and version by version, spoken
to a plain aiorpcx client (no Eschaton client code). Proofs are checked here independently:
header hashes are recomputed from the served headers, merkle roots folded from the branches."""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiorpcx import RPCError, RPCSession, connect_rs

from eschaton.chain.electrum.server import MAX_HEADERS, ElectrumServer
from eschaton.chain.embedded.engine import ChainNode
from eschaton.core.merkle import from_hex, root_from_branch
from eschaton.core.txcodec import merkle_root, sha256d
from tests.unit.chain.helpers import Key, spend_p2wpkh


class _Plain(RPCSession):  # type: ignore[misc]
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.notes: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def handle_request(self, request: Any) -> None:
        self.notes.put_nowait((request.method, request.args))


def _sh(spk: bytes) -> str:
    return hashlib.sha256(spk).digest()[::-1].hex()


def _status(history: list[dict[str, Any]]) -> str | None:
    """The protocol's status, computed here from the served history."""
    if not history:
        return None
    return hashlib.sha256("".join(f"{h['tx_hash']}:{h['height']}:" for h in history).encode()).hexdigest()


def _hash(header_hex: str) -> bytes:
    return sha256d(bytes.fromhex(header_hex))  # internal order


async def _err(s: _Plain, method: str, args: list[Any]) -> RPCError:
    try:
        r = await s.send_request(method, args)
    except RPCError as e:
        return e
    raise AssertionError(f"{method}{args} answered {r!r}")


@asynccontextmanager
async def _serving(tmp_path: Path) -> AsyncIterator[tuple[ChainNode, int]]:
    node = ChainNode(tmp_path)
    server = ElectrumServer(node)
    port = await server.start()
    try:
        yield node, port
    finally:
        await server.stop()
        node.close()


@asynccontextmanager
async def _client(port: int, version: Any) -> AsyncIterator[_Plain]:
    async with connect_rs("127.0.0.1", port, session_factory=_Plain) as s:
        if version is not None:
            await s.send_request("server.version", ["test", version])
        yield s


def test_version_negotiation_over_the_wire(tmp_path: Path) -> None:
    async def run() -> None:
        async with _serving(tmp_path) as (_node, port):
            async with connect_rs("127.0.0.1", port, session_factory=_Plain) as s:
                assert (await s.send_request("server.version", ["electrum/4.3.4", "1.4"]))[1] == "1.4"
                e = await _err(s, "server.version", ["again", "1.6"])
                assert e.code == 1 and "already" in e.message
                # 1.4 has no unsubscribe (1.4.2) and still has relayfee (gone in 1.6)
                assert (await _err(s, "blockchain.scripthash.unsubscribe", ["00" * 32])).code == -32601
                assert await s.send_request("blockchain.relayfee") == 0.00001
            async with connect_rs("127.0.0.1", port, session_factory=_Plain) as s:
                # extra arguments are tolerated (1.6)
                assert (await s.send_request("server.version", ["bdk", ["1.4", "1.6"], "x", 9]))[1] == "1.6"
                assert (await _err(s, "blockchain.relayfee", [])).code == -32601
                assert await s.send_request("mempool.get_info") == {
                    "mempoolminfee": 0.00001, "minrelaytxfee": 0.00001, "incrementalrelayfee": 0.00001}
                assert await s.send_request("blockchain.scripthash.unsubscribe", ["00" * 32]) is False
            async with connect_rs("127.0.0.1", port, session_factory=_Plain) as s:
                e = await _err(s, "server.version", ["old", ["1.0", "1.2"]])
                assert "unsupported protocol version [1.0, 1.2]" in e.message and "1.4 to 1.6" in e.message
                for _ in range(100):  # and the server hung up
                    if s.is_closing():
                        break
                    await asyncio.sleep(0.05)
                assert s.is_closing()
            async with connect_rs("127.0.0.1", port, session_factory=_Plain) as s:
                # no server.version at all: the lowest version (as ElectrumX)
                assert "hex" in await s.send_request("blockchain.block.headers", [0, 1])

    asyncio.run(run())


def test_server_methods(tmp_path: Path) -> None:
    async def run() -> None:
        async with _serving(tmp_path) as (node, port), _client(port, "1.4") as s:
            f = await s.send_request("server.features")
            assert f["genesis_hash"] == node.index.block_at(0).hash  # type: ignore[union-attr]
            assert f["hosts"] == {"127.0.0.1": {"tcp_port": port, "ssl_port": None}}
            assert (f["protocol_min"], f["protocol_max"], f["hash_function"]) == ("1.4", "1.6", "sha256")
            assert f["server_version"] == (await _plain_version(port))
            assert isinstance(await s.send_request("server.banner"), str)
            assert await s.send_request("server.donation_address") == ""
            assert await s.send_request("server.peers.subscribe") == []
            assert await s.send_request("server.add_peer", [{}]) is False
            assert await s.send_request("server.ping") is None

    asyncio.run(run())


async def _plain_version(port: int) -> str:
    async with connect_rs("127.0.0.1", port, session_factory=_Plain) as s:
        return str((await s.send_request("server.version", ["t", "1.6"]))[0])


def test_headers_by_version_with_checkpoint_proofs(tmp_path: Path) -> None:
    async def run() -> None:
        async with _serving(tmp_path) as (node, port):
            node.mine(40)
            async with _client(port, "1.4") as s14, _client(port, ["1.4", "1.6"]) as s16:
                old = await s14.send_request("blockchain.block.headers", [0, 50])
                new = await s16.send_request("blockchain.block.headers", [0, 50])
                assert set(old) == {"count", "hex", "max"} and set(new) == {"count", "headers", "max"}
                assert old["count"] == new["count"] == 41 and old["max"] == new["max"] == MAX_HEADERS
                assert old["hex"] == "".join(new["headers"])
                hdrs = new["headers"]
                # each header links to the one before, and the last is the tip
                for a, b in zip(hdrs, hdrs[1:], strict=False):
                    assert bytes.fromhex(b)[4:36] == _hash(a)
                assert _hash(hdrs[-1])[::-1].hex() == node.tip().block_hash
                assert await s16.send_request("blockchain.block.header", [7]) == hdrs[7]

                # cp_height: the root over header hashes 0..cp, recomputed here from the headers
                for height, cp in [(5, 8), (0, 0 + 1), (17, 40), (40, 40), (33, 34)]:
                    leaves = [_hash(h) for h in hdrs[: cp + 1]]
                    p = await s16.send_request("blockchain.block.header", [height, cp])
                    assert p["header"] == hdrs[height]
                    assert from_hex(p["root"]) == merkle_root(leaves)
                    assert root_from_branch(_hash(p["header"]), [from_hex(b) for b in p["branch"]], height) \
                        == merkle_root(leaves)
                chunk = await s14.send_request("blockchain.block.headers", [10, 5, 30])
                assert chunk["count"] == 5 and len(chunk["hex"]) == 5 * 160
                leaves = [_hash(h) for h in hdrs[:31]]
                assert from_hex(chunk["root"]) == merkle_root(leaves)
                last = chunk["hex"][-160:]
                assert root_from_branch(_hash(last), [from_hex(b) for b in chunk["branch"]], 14) == merkle_root(leaves)
                # past the tip: fewer headers; a checkpoint below the headers or past the tip: refused
                assert (await s16.send_request("blockchain.block.headers", [39, 5]))["count"] == 2
                assert (await s16.send_request("blockchain.block.headers", [41, 5]))["headers"] == []
                assert (await _err(s16, "blockchain.block.header", [9, 8])).code == 1
                assert (await _err(s16, "blockchain.block.header", [9, 41])).code == 1
                assert (await _err(s16, "blockchain.block.header", [41])).code == 1
                assert (await _err(s16, "blockchain.block.headers", [-1, 2])).code == 1

    asyncio.run(run())


def test_history_status_mempool_and_merkle_proofs(tmp_path: Path) -> None:
    async def run() -> None:
        async with _serving(tmp_path) as (node, port), _client(port, ["1.4", "1.6"]) as s:
            k, dest = Key(1), Key(9)
            sh_k, sh_d = _sh(k.p2wpkh), _sh(dest.p2wpkh)
            assert await s.send_request("blockchain.scripthash.subscribe", [sh_d]) is None
            assert await s.send_request("blockchain.scripthash.get_history", [sh_d]) == []
            node.mine(102, k.p2wpkh)
            assert node.index is not None
            coins = sorted(node.index.coins_for_script(k.p2wpkh), key=lambda c: c.height)
            a, b = coins[0], coins[1]
            # confirmed: a to dest at 103 (with a second tx in the block), b to dest at 104
            tx1 = node.broadcast(spend_p2wpkh(a.txid, 0, a.value, k, [(a.value - 1_000, dest.p2wpkh)]))
            node.broadcast(spend_p2wpkh(coins[2].txid, 0, coins[2].value, k, [(coins[2].value - 500, k.p2wpkh)]))
            node.mine(1)
            tx2 = node.broadcast(spend_p2wpkh(b.txid, 0, b.value, k, [(b.value - 1_000, dest.p2wpkh)]))
            node.mine(1)
            # mempool: dest spends tx1's output (height 0, fee 700); a child of that (height -1)
            v1 = a.value - 1_000
            m1 = node.broadcast(spend_p2wpkh(tx1, 0, v1, dest, [(v1 - 700, dest.p2wpkh)]))
            m2 = node.broadcast(spend_p2wpkh(m1, 0, v1 - 700, dest, [(v1 - 2_000, k.p2wpkh)]))
            # and k pays dest from a confirmed coin (height 0, fee 300)
            c = coins[3]
            m3 = node.broadcast(spend_p2wpkh(c.txid, 0, c.value, k, [(c.value - 300, dest.p2wpkh)]))

            hist = await s.send_request("blockchain.scripthash.get_history", [sh_d])
            zero = sorted([{"tx_hash": m1, "height": 0, "fee": 700}, {"tx_hash": m3, "height": 0, "fee": 300}],
                          key=lambda e: e["tx_hash"])
            assert hist == [{"tx_hash": tx1, "height": 103}, {"tx_hash": tx2, "height": 104},
                            *zero, {"tx_hash": m2, "height": -1, "fee": 1_300}]
            assert await s.send_request("blockchain.scripthash.get_mempool", [sh_d]) == hist[2:]
            # the subscription's last notification carries the status of exactly that history
            st = None
            while not s.notes.empty() or st is None:
                m, args = await asyncio.wait_for(s.notes.get(), 10)
                if m == "blockchain.scripthash.subscribe":
                    assert args[0] == sh_d
                    st = args[1]
                    if st == _status(hist):
                        break
            assert st == _status(hist)
            assert await s.send_request("blockchain.scripthash.subscribe", [sh_d]) == _status(hist)
            bal = await s.send_request("blockchain.scripthash.get_balance", [sh_d])
            # confirmed: tx1 and tx2's outputs; the mempool spends tx1's, and m3 adds one
            assert bal == {"confirmed": 2 * (50 * 10**8 - 1_000), "unconfirmed": -v1 + (c.value - 300)}
            utxos = await s.send_request("blockchain.scripthash.listunspent", [sh_d])
            assert [(u["tx_hash"], u["height"]) for u in utxos] == [(tx2, 104), (m3, 0)]
            # k's history: coinbases, then its own spends; m2 pays k back
            hk = await s.send_request("blockchain.scripthash.get_history", [sh_k])
            assert [h["height"] for h in hk[:102]] == list(range(1, 103))
            assert {h["tx_hash"] for h in hk if h["height"] <= 0} == {m2, m3}

            # merkle proofs against the block header's merkle root (block 103 holds 3 txs)
            for txid, height in [(tx1, 103), (tx2, 104), (hk[0]["tx_hash"], 1)]:
                p = await s.send_request("blockchain.transaction.get_merkle", [txid, height])
                assert p["block_height"] == height
                hdr = bytes.fromhex(await s.send_request("blockchain.block.header", [height]))
                assert root_from_branch(from_hex(txid), [from_hex(x) for x in p["merkle"]], p["pos"]) == hdr[36:68]
                pos = await s.send_request("blockchain.transaction.id_from_pos", [height, p["pos"], True])
                assert pos == {"tx_hash": txid, "merkle": p["merkle"]}
                assert await s.send_request("blockchain.transaction.id_from_pos", [height, p["pos"]]) == txid
            assert (await _err(s, "blockchain.transaction.get_merkle", [tx1, 104])).code == 1
            assert (await _err(s, "blockchain.transaction.id_from_pos", [103, 3])).code == 1

            verbose = await s.send_request("blockchain.transaction.get", [tx1, True])
            assert verbose["txid"] == tx1 and verbose["confirmations"] == 2
            assert verbose["blockhash"] == node.index.block_at(103).hash  # type: ignore[union-attr]
            assert verbose["vout"][0]["scriptPubKey"]["hex"] == dest.p2wpkh.hex()
            assert verbose["vout"][0]["scriptPubKey"]["address"].startswith("bcrt1")
            assert verbose["vin"][0] | {} == verbose["vin"][0] and verbose["vin"][0]["txid"] == a.txid
            mem = await s.send_request("blockchain.transaction.get", [m1, True])
            assert "confirmations" not in mem and mem["hex"] == await s.send_request("blockchain.transaction.get", [m1])

            hist_fee = await s.send_request("mempool.get_fee_histogram")
            assert sum(v for _, v in hist_fee) == sum(e.tx.vsize for e in node.mempool.entries.values())
            assert [r for r, _ in hist_fee] == sorted((r for r, _ in hist_fee), reverse=True)

            # a reorg: block 104 replaced by an empty branch; tx2 goes back to the mempool
            fork = node.index.block_at(103).hash  # type: ignore[union-attr]
            node.mine_branch(fork, 2)
            hist2 = await s.send_request("blockchain.scripthash.get_history", [sh_d])
            assert hist2[0] == {"tx_hash": tx1, "height": 103}
            assert {"tx_hash": tx2, "height": 0, "fee": 1_000} in hist2
            assert all(h["height"] != 104 for h in hist2)
            assert (await _err(s, "blockchain.transaction.get_merkle", [tx2, 104])).code == 1
            assert await s.send_request("blockchain.scripthash.subscribe", [sh_d]) == _status(hist2)

            assert (await _err(s, "blockchain.scripthash.get_history", ["zz"])).code == 1

    asyncio.run(run())


@pytest.mark.parametrize("version", ["1.4", "1.6"])
def test_broadcast_and_package(tmp_path: Path, version: str) -> None:
    async def run() -> None:
        async with _serving(tmp_path) as (node, port), _client(port, version) as s:
            k = Key(1)
            node.mine(101, k.p2wpkh)
            assert node.index is not None
            a = sorted(node.index.coins_for_script(k.p2wpkh), key=lambda c: c.height)[0]
            parent = spend_p2wpkh(a.txid, 0, a.value, k, [(a.value - 1_000, k.p2wpkh)])
            child = spend_p2wpkh(hashlib.sha256(b"").hexdigest(), 0, 10_000, k, [(9_000, k.p2wpkh)])
            if version == "1.4":
                assert (await _err(s, "blockchain.transaction.broadcast_package", [[parent.hex()]])).code == -32601
                return
            r = await s.send_request("blockchain.transaction.broadcast_package", [[parent.hex(), child.hex()]])
            assert r["success"] is False and r["errors"][0]["error"] == "bad-txns-inputs-missingorspent"
            assert len(r["errors"]) == 1 and len(node.mempool) == 1

    asyncio.run(run())
