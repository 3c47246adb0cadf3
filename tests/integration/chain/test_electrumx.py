"""The real ElectrumX (PyPI ``e-x`` 2.0.0, leveldb) indexes the embedded chain through our RPC.

ElectrumX checks the daemon as it does Bitcoin Core (``getnetworkinfo.version`` >= 31.0,
``getindexinfo`` with ``txindex`` and ``txospenderindex``, ``Content-Type: application/json``,
an ``error`` member in every reply, batches), then syncs. Spoken to with the Electrum protocol
(aiorpcx), it serves: the history and balance of a wallet script, a merkle proof that checks
against the block header, a broadcast that reaches our mempool, and after a reorg on our chain
the new tip and the reorganised history.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiorpcx import RPCSession, connect_rs

from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.rpc.server import RpcServer
from eschaton.core.txcodec import decode_block, decode_tx, sha256d
from tests.conftest import need
from tests.integration.node.harness import free_port
from tests.unit.chain.helpers import Key, spend_p2wpkh

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
FEE = 2_000


def _electrumx() -> str:
    exe = Path(sys.executable).with_name("electrumx_server")
    need(exe.exists(), "needs electrumx_server (`make setup` installs e-x[leveldb] from the dev extra)")
    return str(exe)


def scripthash(spk: bytes) -> str:
    return hashlib.sha256(spk).digest()[::-1].hex()


def merkle_root_from(txid: str, branch: list[str], pos: int) -> str:
    h = bytes.fromhex(txid)[::-1]
    for sibling in branch:
        s = bytes.fromhex(sibling)[::-1]
        h = sha256d(s + h) if pos & 1 else sha256d(h + s)
        pos >>= 1
    return h[::-1].hex()


async def until(what: str, fn: Any, timeout: float = 60.0) -> Any:
    """Await ``fn()`` until it returns something truthy: ElectrumX follows the daemon by polling it."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fn()
        except Exception as e:  # ElectrumX still starting or syncing: ask again
            last = e
        else:
            if last:
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_electrumx_indexes_the_embedded_chain(tmp_path: Path) -> None:
    exe = _electrumx()

    async def run() -> None:
        node = ChainNode(tmp_path / "node")
        k, dest = Key(1), Key(2)
        node.mine(101, k.p2wpkh)
        rpc = RpcServer(node, user="ex", password="pw")
        rpc_port = await rpc.start()
        ex_port = free_port()
        (tmp_path / "ex").mkdir()
        env = {**os.environ, "COIN": "Bitcoin", "NET": "regtest", "DB_ENGINE": "leveldb",
               "DB_DIRECTORY": str(tmp_path / "ex"), "DAEMON_URL": f"http://ex:pw@127.0.0.1:{rpc_port}/",
               "SERVICES": f"tcp://127.0.0.1:{ex_port}", "PEER_DISCOVERY": "off", "PEER_ANNOUNCE": "",
               "ALLOW_ROOT": "1", "LOG_LEVEL": "info", "CACHE_MB": "64",
               # It polls the daemon (5 s by default); a short poll keeps the test short.
               "DAEMON_POLL_INTERVAL_BLOCKS": "200", "DAEMON_POLL_INTERVAL_MEMPOOL": "200"}
        log = (tmp_path / "electrumx.log").open("w")
        proc = await asyncio.create_subprocess_exec(exe, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT)
        try:
            async def connected() -> Any:
                return await connect_rs("127.0.0.1", ex_port, session_factory=RPCSession).__aenter__()

            s = await until("ElectrumX to listen", connected)
            assert proc.returncode is None
            await s.send_request("server.version", ["eschaton-test", "1.4"])

            async def at_height(h: int, bh: str) -> bool:
                tip = await s.send_request("blockchain.headers.subscribe", [])
                return bool(tip["height"] == h and
                            decode_block(bytes.fromhex(tip["hex"]) + b"\x00").header.hash == bh)

            await until("ElectrumX to sync to 101", lambda: at_height(101, node.tip().block_hash))

            # A wallet transaction, confirmed: history, balance and a merkle proof.
            assert node.index is not None
            cb = decode_block(node.index.raw_block(1) or b"").txs[0]
            value = cb.outputs[0].value
            raw = spend_p2wpkh(cb.txid, 0, value, k, [(value - FEE, dest.p2wpkh)])
            txid = node.broadcast(raw)
            [bh] = node.mine(1)
            await until("ElectrumX to sync to 102", lambda: at_height(102, bh))
            sh = scripthash(dest.p2wpkh)
            assert await s.send_request("blockchain.scripthash.get_history", [sh]) == [
                {"tx_hash": txid, "height": 102}]
            assert await s.send_request("blockchain.scripthash.get_balance", [sh]) == {
                "confirmed": value - FEE, "unconfirmed": 0}
            proof = await s.send_request("blockchain.transaction.get_merkle", [txid, 102])
            header = bytes.fromhex(await s.send_request("blockchain.block.header", [102]))
            assert proof["block_height"] == 102
            assert merkle_root_from(txid, proof["merkle"], proof["pos"]) == header[36:68][::-1].hex()
            assert await s.send_request("blockchain.transaction.get", [txid]) == raw.hex()

            # A broadcast through ElectrumX reaches our mempool.
            spend = spend_p2wpkh(txid, 0, value - FEE, dest, [(value - 2 * FEE, k.p2wpkh)])
            sent = await s.send_request("blockchain.transaction.broadcast", [spend.hex()])
            assert sent == decode_tx(spend).txid and sent in node.mempool

            async def in_ex_mempool() -> bool:
                return sent in {m["tx_hash"] for m in await s.send_request("blockchain.scripthash.get_mempool", [sh])}

            await until("ElectrumX to see the broadcast in the mempool", in_ex_mempool)

            # A reorg on our chain: a longer branch from 101 without block 102. ElectrumX follows
            # it; the wallet transaction is back in the mempool (ours and ElectrumX's).
            fork = node.index.block_at(101)
            assert fork is not None
            new = node.mine_branch(fork.hash, 3)
            assert node.tip().block_hash == new[-1] and txid in node.mempool
            await until("ElectrumX to follow the reorg", lambda: at_height(104, new[-1]))

            async def history_unconfirmed() -> bool:
                h = await s.send_request("blockchain.scripthash.get_history", [sh])
                return bool(h and h[0]["tx_hash"] == txid and h[0]["height"] == 0)

            await until("the history to show the reorganised transaction as unconfirmed", history_unconfirmed)
            assert (await s.send_request("blockchain.block.header", [102])) != header.hex()
            await s.close()
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()
            await rpc.stop()
            node.close()

    try:
        asyncio.run(run())
    except BaseException:
        print((tmp_path / "electrumx.log").read_text()[-4000:])
        raise
