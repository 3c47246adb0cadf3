"""One owner process serves the chain over Electrum; client processes share it."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eschaton.chain import open_chain
from eschaton.chain.backend import (
    BroadcastRefused,
    NewTip,
    OutPoint,
    OutpointSpent,
    Reorg,
    ScriptActivity,
    UnknownTransaction,
)
from eschaton.chain.electrum.client import ElectrumChainClient
from eschaton.chain.electrum.server import ElectrumServer
from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.errors import BlockRejected
from tests.unit.chain.helpers import Key, spend_p2wpkh

REPO = Path(__file__).resolve().parents[3]
FEE = 2_000


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "firmware"), str(REPO)])
    return env


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Path]:
    """``eschaton chain serve`` running as the owner of tmp_path's chain."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "eschaton", "chain", "serve", "--datadir", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving chain"), line
        yield tmp_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert not (tmp_path / "chain" / "electrum.port").exists()


_WATCHER = r"""
import asyncio, json, sys
from eschaton.chain import open_chain
from eschaton.chain.backend import ScriptActivity
from tests.unit.chain.helpers import Key

async def main():
    chain = await open_chain(sys.argv[1])
    seen = asyncio.Queue()
    chain.subscribe(seen.put_nowait)
    await chain.watch_script(Key(9).p2wpkh)
    print(json.dumps({"backend": type(chain).__name__}), flush=True)
    while True:
        ev = await asyncio.wait_for(seen.get(), 60)
        if isinstance(ev, ScriptActivity) and ev.height is not None:
            print(json.dumps({"txid": ev.txid, "height": ev.height}), flush=True)
            break
    await chain.close()

asyncio.run(main())
"""

_PAYER = r"""
import asyncio, json, sys
from eschaton.chain import open_chain
from tests.unit.chain.helpers import Key, spend_p2wpkh

async def main():
    chain = await open_chain(sys.argv[1])
    k = Key(1)
    await chain.mine(101, k.p2wpkh)
    coins = sorted(await chain.list_unspent(k.p2wpkh), key=lambda u: u.height)
    c = coins[0]
    assert c.coinbase and c.height == 1
    txid = await chain.broadcast(spend_p2wpkh(c.outpoint.txid, c.outpoint.vout, c.value, k,
                                              [(c.value - 2000, Key(9).p2wpkh)]))
    (block,) = await chain.mine(1)
    print(json.dumps({"backend": type(chain).__name__, "txid": txid, "block": block,
                      "coin": [c.outpoint.txid, c.outpoint.vout]}), flush=True)
    await chain.close()

asyncio.run(main())
"""


@pytest.mark.timeout(120)
def test_two_client_processes_share_one_server(served: Path) -> None:
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(served)], stdout=subprocess.PIPE,
                               text=True, env=_env())
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline())["backend"] == "ElectrumChainClient"
        payer = subprocess.run([sys.executable, "-c", _PAYER, str(served)], capture_output=True, text=True,
                               env=_env(), timeout=90)
        assert payer.returncode == 0, payer.stderr
        paid = json.loads(payer.stdout)
        assert paid["backend"] == "ElectrumChainClient"
        seen = json.loads(watcher.stdout.readline())
        assert watcher.wait(timeout=30) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert seen == {"txid": paid["txid"], "height": 102}

    async def check() -> None:
        chain = await open_chain(served)
        assert isinstance(chain, ElectrumChainClient)
        try:
            st = await chain.tx_status(paid["txid"])
            assert (st.height, st.block_hash, st.confirmations) == (102, paid["block"], 1)
            sp = await chain.spender(OutPoint(*paid["coin"]))
            assert sp is not None and sp.txid == paid["txid"] and sp.height == 102
            assert [u.outpoint.txid for u in await chain.list_unspent(Key(9).p2wpkh)] == [paid["txid"]]
            raw = await chain.get_transaction(paid["txid"])
            with pytest.raises(BroadcastRefused) as e:
                await chain.broadcast(raw)
            assert e.value.reason == "txn-already-known"
        finally:
            await chain.close()

    asyncio.run(check())


def test_client_maps_errors_and_events(tmp_path: Path) -> None:
    async def run() -> None:
        node = ChainNode(tmp_path)
        server = ElectrumServer(node)
        await server.start()
        client = await ElectrumChainClient.connect_owner(server.socket_path)  # mines: the owner's path
        events: list[object] = []
        client.subscribe(events.append)
        try:
            k = Key(1)
            await client.mine(101, k.p2wpkh)
            tip = await client.tip()
            assert tip.height == 101
            for _ in range(200):  # notifications travel separately from the reply
                if any(isinstance(ev, NewTip) and ev.tip.height == 101 for ev in events):
                    break
                await asyncio.sleep(0.01)
            # one commit for the 101 blocks: one NewTip for the new tip
            assert [ev.tip.height for ev in events if isinstance(ev, NewTip)] == [101]
            events.clear()
            cb = sorted(await client.list_unspent(k.p2wpkh), key=lambda u: u.height)[0]
            op = cb.outpoint
            await client.watch_outpoint(op)
            await client.watch_script(Key(9).p2wpkh)
            early = spend_p2wpkh(op.txid, op.vout, cb.value, k, [(cb.value - FEE, Key(9).p2wpkh)], locktime=200)
            with pytest.raises(BroadcastRefused) as e:
                await client.broadcast(early)
            assert e.value.reason == "non-final"
            with pytest.raises(BroadcastRefused) as e:
                await client.broadcast(b"\x01\x02")
            assert e.value.reason == "TX decode failed"
            with pytest.raises(UnknownTransaction):
                await client.tx_status("00" * 32)
            with pytest.raises(UnknownTransaction):
                await client.get_transaction("00" * 32)
            assert await client.estimate_fee(2) == 1000
            u = await client.get_utxo(op)
            assert u is not None and u.coinbase and u.height == 1 and u.script_pubkey == k.p2wpkh

            txid = await client.broadcast(spend_p2wpkh(op.txid, op.vout, cb.value, k, [(cb.value - FEE, Key(9).p2wpkh)]))
            assert await client.get_utxo(op) is None
            assert (await client.spender(op)).height is None  # type: ignore[union-attr]
            (b1,) = await client.mine(1)
            for _ in range(100):
                if any(isinstance(ev, NewTip) and ev.tip.block_hash == b1 for ev in events):
                    break
                await asyncio.sleep(0.01)
            kinds = [type(ev).__name__ for ev in events]
            assert kinds == ["OutpointSpent", "ScriptActivity", "NewTip", "OutpointSpent", "ScriptActivity"], kinds
            assert isinstance(events[3], OutpointSpent) and events[3].spend.txid == txid
            assert isinstance(events[4], ScriptActivity) and events[4].height == 102

            # a competing longer branch over the client: Reorg, then NewTip
            events.clear()
            branch = await client.mine_branch(tip.block_hash, 2)
            for _ in range(100):
                if len(events) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert isinstance(events[0], Reorg) and events[0].disconnected == (b1,)
            assert isinstance(events[1], NewTip) and events[1].tip.block_hash == branch[-1]
            assert (await client.tx_status(txid)).in_mempool

            bad = spend_p2wpkh(op.txid, op.vout, cb.value + 1, k, [(cb.value - FEE, k.p2wpkh)])
            with pytest.raises(BlockRejected) as r:
                await client.mine_branch(branch[-1], 1, [bad])
            assert r.value.reason == "block-script-verify-flag-failed"
            assert (await client.tip()).block_hash == branch[-1]
        finally:
            await client.close()
            await server.stop()
            node.close()

    asyncio.run(run())


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "eschaton", "chain", *args, "--datadir", str(tmp_path)],
                              capture_output=True, text=True, env=_env(), timeout=60)

    ok = run("mine", "2", "--to", "bcrt1q6rhpng9evdsfnn833a4f4vej0asu6dk5srld6x", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["height"] == 2
    usage = run("mine", "0")  # refused by the argument's own type: a usage error, exit 2
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1, usage.stderr
    for args in (
        ("mine", "1", "--to", "bcrt1qnotanaddress"),
        ("mine", "1", "--to", "bc1q6rhpng9evdsfnn833a4f4vej0asu6dk5srld6x"),
        ("broadcast", "xyz"),
        ("broadcast", "00"),
        ("tx", "12"),
        ("tx", "ab" * 32),
    ):
        r = run(*args)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (args, r.stderr)
    info = run("info", "--json")
    assert json.loads(info.stdout)["height"] == 2


_RACER = r"""
import asyncio, json, sys
from eschaton.chain import open_chain

async def main():
    chain = await open_chain(sys.argv[1])
    await chain.mine(1)
    print(json.dumps({"backend": type(chain).__name__}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin
    await chain.close()

asyncio.run(main())
"""


@pytest.mark.timeout(120)
def test_two_processes_opening_at_once_get_one_owner(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=_env())
        for _ in range(2)
    ]
    try:
        kinds = sorted(json.loads(p.stdout.readline())["backend"] for p in procs)  # type: ignore[union-attr]
        assert kinds == ["ElectrumChainClient", "EmbeddedChain"]

        async def height() -> int:
            chain = await open_chain(tmp_path)
            try:
                assert isinstance(chain, ElectrumChainClient)
                return (await chain.tip()).height
            finally:
                await chain.close()

        assert asyncio.run(height()) == 2
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
