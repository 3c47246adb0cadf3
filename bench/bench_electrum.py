"""Electrum server throughput: ``get_history`` + ``get_merkle`` of every history entry, for many
script hashes, over a chain with many wallet transactions, as a wallet's sync asks them.

Prebuilds one regtest chain: 101 coinbase blocks, fan-out transactions, then ``--txs`` P2WPKH
spends in blocks of ``--per-block``, each paying one of ``--scripts`` scripts (so each script has
``txs/scripts`` transactions in its history). Feeds it to a ``ChainNode``, then serves it as a
deployment does, from its own process (``eschaton chain serve --rpc-port 0``: our Electrum
server and the bitcoind-compatible RPC), and measures, interleaved over ``--rounds`` rounds
(medians printed):
  - served: one aiorpcx client asks, per script hash, ``blockchain.scripthash.get_history`` and
    then ``blockchain.transaction.get_merkle`` for each entry, ``--window`` script hashes at a
    time in flight together, as wallets pipeline them;
  - ElectrumX (baseline, same run): the same client against the real ElectrumX (``e-x``, in the
    dev extra) indexing the same chain through the chain's bitcoind-compatible RPC, its session
    cost throttling turned off (``COST_SOFT_LIMIT=COST_HARD_LIMIT=0``) as ours has none;
  - bare loop (floor, same run): the same number of round trips as ``server.ping`` to our
    server: the floor any aiorpcx server (ElectrumX included) pays per request;
  - direct (ceiling): the same lookups called in-process on a ``ScriptIndex``, no protocol at
    all (measured before serving: the chain has one owner at a time).
When ``electrumx_server`` is not installed the bench says so and the bare loop is the baseline.
The goal is served >= 1.0x ElectrumX. Compare the columns of one run, not runs: figures swing
with load.
Run: .venv/bin/python bench/bench_electrum.py [--scripts N] [--txs N] [--per-block N] [--rounds N]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from aiorpcx import RPCSession, connect_rs  # noqa: E402

from eschaton.chain.electrum.history import ScriptIndex  # noqa: E402
from eschaton.chain.embedded.blocks import build_block  # noqa: E402
from eschaton.chain.embedded.engine import ChainNode  # noqa: E402
from eschaton.chain.rpc.server import COOKIE_FILE  # noqa: E402
from eschaton.core.txcodec import decode_block, decode_tx  # noqa: E402
from tests.integration.node.harness import _env, eschaton_cmd, free_port  # noqa: E402
from tests.unit.chain.helpers import Key, build_tx, sign_p2wpkh  # noqa: E402

GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
PER_FAN = 2_500


def script(i: int) -> bytes:
    return b"\x00\x14" + hashlib.sha256(b"bench-electrum-%d" % i).digest()[:20]


def scripthash(spk: bytes) -> str:
    return hashlib.sha256(spk).digest()[::-1].hex()


def prebuild(n_scripts: int, n_txs: int, per_block: int) -> list[bytes]:
    k = Key(1)
    t0 = int(time.time()) - 3600
    prev, blocks, coinbases = GENESIS, [], []
    height = 0
    n_fans = (n_txs + PER_FAN - 1) // PER_FAN
    for _ in range(max(101, n_fans + 100)):
        height += 1
        raw = build_block(prev, height, t0 + height, k.p2wpkh, [], 0, extra=height.to_bytes(4, "little"))
        blk = decode_block(raw)
        coinbases.append(blk.txs[0])
        prev = blk.header.hash
        blocks.append(raw)
    fans, utxos = [], []
    for cb in coinbases[:n_fans]:
        value = cb.outputs[0].value
        each = (value - 100_000) // PER_FAN
        tx = build_tx([(cb.txid, 0)], [(each, k.p2wpkh) for _ in range(PER_FAN)])
        sign_p2wpkh(tx, 0, k, value)
        d = decode_tx(tx.serialize())
        fans.append(d)
        utxos += [(d.txid, i, each) for i in range(PER_FAN)]
    height += 1
    raw = build_block(prev, height, t0 + height, k.p2wpkh, fans, 100_000 * len(fans))
    prev = decode_block(raw).header.hash
    blocks.append(raw)
    utxos = utxos[:n_txs]
    for i in range(0, len(utxos), per_block):
        txs = []
        for j, (txid, vout, value) in enumerate(utxos[i : i + per_block], start=i):
            tx = build_tx([(txid, vout)], [(value - 1_000, script(j % n_scripts))])
            sign_p2wpkh(tx, 0, k, value)
            txs.append(decode_tx(tx.serialize()))
        height += 1
        raw = build_block(prev, height, t0 + height, k.p2wpkh, txs, 1_000 * len(txs))
        prev = decode_block(raw).header.hash
        blocks.append(raw)
    return blocks


async def served(port: int, shs: list[str], window: int) -> tuple[float, int]:
    """(seconds, requests) for history + merkle of every script hash over one connection, in
    windows of ``window`` script hashes whose requests are in flight together, as wallets send
    them (ElectrumX 2.0 pads and holds small replies up to 1 s until 1 KiB is waiting, for
    privacy: one request at a time would measure that wait, not the server)."""
    async with connect_rs("127.0.0.1", port, session_factory=RPCSession) as s:
        await s.send_request("server.version", ["bench", "1.4"])
        n = 0
        t = time.perf_counter()
        for i in range(0, len(shs), window):
            chunk = shs[i : i + window]
            hists = await asyncio.gather(*(s.send_request("blockchain.scripthash.get_history", [sh])
                                           for sh in chunk))
            todo = [h for hist in hists for h in hist]
            proofs = await asyncio.gather(*(s.send_request("blockchain.transaction.get_merkle",
                                                            [h["tx_hash"], h["height"]]) for h in todo))
            assert all(p["merkle"] for p in proofs)
            n += len(chunk) + len(todo)
        return time.perf_counter() - t, n


async def bare(port: int, shs: list[str], per_sh: int, window: int) -> float:
    """The same round trips as pings, in the same windows."""
    async with connect_rs("127.0.0.1", port, session_factory=RPCSession) as s:
        await s.send_request("server.version", ["bench", "1.4"])
        t = time.perf_counter()
        for i in range(0, len(shs), window):
            k = len(shs[i : i + window])
            await asyncio.gather(*(s.send_request("server.ping") for _ in range(k)))
            await asyncio.gather(*(s.send_request("server.ping") for _ in range(k * per_sh)))
        return time.perf_counter() - t


def direct(idx: ScriptIndex, shs: list[str]) -> float:
    t = time.perf_counter()
    for sh in shs:
        for h in idx.history(bytes.fromhex(sh)[::-1]):
            assert idx.merkle(h["tx_hash"], h["height"]) is not None
    return time.perf_counter() - t


async def start_electrumx(datadir: Path, workdir: Path, tip: int) -> tuple[subprocess.Popen[bytes], int] | str:
    """ElectrumX reading the served chain's RPC, synced to ``tip``: (process, port), or why not."""
    exe = Path(sys.executable).with_name("electrumx_server")
    if not exe.exists():
        return "ElectrumX: not installed (e-x, dev extra); the bare loop is the baseline"
    rpc_port = int((datadir / "chain" / "rpc.port").read_text())
    cookie = (datadir / "chain" / COOKIE_FILE).read_text().strip()  # __cookie__:HEX, we are its owner
    port = free_port()
    (workdir / "ex").mkdir()
    env = {**os.environ, "COIN": "Bitcoin", "NET": "regtest", "DB_ENGINE": "leveldb",
           "DB_DIRECTORY": str(workdir / "ex"), "DAEMON_URL": f"http://{cookie}@127.0.0.1:{rpc_port}/",
           "SERVICES": f"tcp://127.0.0.1:{port}", "PEER_DISCOVERY": "off", "PEER_ANNOUNCE": "",
           "ALLOW_ROOT": "1", "LOG_LEVEL": "warning", "CACHE_MB": "256",
           "COST_SOFT_LIMIT": "0", "COST_HARD_LIMIT": "0"}
    proc = subprocess.Popen([str(exe)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            async with connect_rs("127.0.0.1", port, session_factory=RPCSession) as s:
                await s.send_request("server.version", ["bench", "1.4"])
                while (await s.send_request("blockchain.headers.subscribe"))["height"] < tip:
                    await asyncio.sleep(0.2)
                return proc, port
        except OSError:
            await asyncio.sleep(0.2)  # not listening yet: it listens once it has caught up
    proc.kill()
    proc.wait()
    return "ElectrumX: did not sync within 300 s; the bare loop is the baseline"


def serve(datadir: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([*eschaton_cmd(), "chain", "serve", "--datadir", str(datadir), "--rpc-port", "0"],
                            stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("serving chain"), line
    return proc, int((datadir / "chain" / "electrum.port").read_text())


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def measure(args: argparse.Namespace, workdir: Path) -> None:
    datadir = workdir / "node"
    t = time.perf_counter()
    blocks = prebuild(args.scripts, args.txs, args.per_block)
    print(f"prebuilt {len(blocks)} blocks ({args.txs} wallet txs to {args.scripts} scripts) "
          f"in {time.perf_counter() - t:.1f}s")
    node = ChainNode(datadir)
    t = time.perf_counter()
    for i in range(0, len(blocks), 50):
        node.submit_blocks(blocks[i : i + 50])
    tip = node.tip().height
    print(f"chain fed to the node in {time.perf_counter() - t:.1f}s, tip {tip}")
    shs = [scripthash(script(i)) for i in range(args.scripts)]
    per_sh = args.txs // args.scripts
    rates: dict[str, list[float]] = {"served": [], "electrumx": [], "bare": [], "direct": []}
    idx = ScriptIndex(node)
    for _ in range(args.rounds):
        rates["direct"].append(len(shs) / direct(idx, shs))
    node.close()

    server, port = serve(datadir)
    ex: tuple[subprocess.Popen[bytes], int] | str = "ElectrumX: not started"
    try:
        t = time.perf_counter()
        ex = await start_electrumx(datadir, workdir, tip)
        note = ex if isinstance(ex, str) else \
            f"ElectrumX 2.0 (e-x) indexed the same chain through our RPC in {time.perf_counter() - t:.1f}s"
        for _ in range(args.rounds):
            secs, n = await served(port, shs, args.window)
            assert n == len(shs) * (1 + per_sh), n
            rates["served"].append(len(shs) / secs)
            if not isinstance(ex, str):
                secs, n = await served(ex[1], shs, args.window)
                assert n == len(shs) * (1 + per_sh), n
                rates["electrumx"].append(len(shs) / secs)
            rates["bare"].append(len(shs) / await bare(port, shs, per_sh, args.window))
    finally:
        if not isinstance(ex, str):
            stop(ex[0])
        stop(server)
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    print(note)
    print(f"script hashes/s (history + {per_sh} merkle proofs each, {args.window} script hashes in flight; "
          f"median of {args.rounds} rounds):")
    print(f"  served over Electrum        {med['served']:10.0f}")
    if "electrumx" in med:
        print(f"  ElectrumX (baseline)        {med['electrumx']:10.0f}   "
              f"served/ElectrumX = {med['served'] / med['electrumx']:.2f}  (goal >= 1.0)")
    print(f"  bare loop (pings, floor)    {med['bare']:10.0f}   served/bare   = {med['served'] / med['bare']:.2f}")
    print(f"  direct ScriptIndex calls    {med['direct']:10.0f}   served/direct = {med['served'] / med['direct']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scripts", type=int, default=1_000)
    ap.add_argument("--txs", type=int, default=10_000)
    ap.add_argument("--per-block", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--window", type=int, default=1_000, help="script hashes whose requests are in flight together")
    args = ap.parse_args()
    if args.scripts < 1 or args.txs < args.scripts or args.txs % args.scripts:
        ap.error("--txs must be a positive multiple of --scripts")
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(measure(args, Path(d)))


if __name__ == "__main__":
    main()
