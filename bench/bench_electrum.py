"""Electrum server throughput: ``get_history`` + ``get_merkle`` of every history entry, for many
script hashes, over a chain with many wallet transactions, as a wallet's sync asks them.

Prebuilds one regtest chain: 101 coinbase blocks, fan-out transactions, then ``--txs`` P2WPKH
spends in blocks of ``--per-block``, each paying one of ``--scripts`` scripts (so each script has
``txs/scripts`` transactions in its history). Feeds it to a ``ChainNode``, serves it with
``ElectrumServer`` and measures, interleaved over ``--rounds`` rounds (medians printed):
  - served: one aiorpcx client asks, per script hash, ``blockchain.scripthash.get_history`` and
    then ``blockchain.transaction.get_merkle`` for each entry (concurrently, as Electrum does);
  - bare loop (baseline, same run): the same number of round trips as ``server.ping`` on the same
    kind of connection: the floor any aiorpcx server (ElectrumX included) pays per request;
  - direct (ceiling, same run): the same lookups called in-process on the server's own
    ``ScriptIndex``, no protocol at all.
ElectrumX on the same chain needs a bitcoind-compatible RPC in front of the embedded chain; when
that (``eschaton.chain.rpc``) and ElectrumX (``e-x``) are not both installed, the bench says so and
the bare loop is the baseline. Compare the columns of one run, not runs: figures swing with load.
Run: .venv/bin/python bench/bench_electrum.py [--scripts N] [--txs N] [--per-block N] [--rounds N]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from aiorpcx import RPCSession, connect_rs  # noqa: E402

from eschaton.chain.electrum.server import ElectrumServer  # noqa: E402
from eschaton.chain.embedded.blocks import build_block  # noqa: E402
from eschaton.chain.embedded.node import ChainNode  # noqa: E402
from eschaton.core.codec import decode_block, decode_tx  # noqa: E402
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


async def served(port: int, shs: list[str]) -> tuple[float, int]:
    """(seconds, requests) for history + merkle of every script hash over one connection."""
    async with connect_rs("127.0.0.1", port, session_factory=RPCSession) as s:
        await s.send_request("server.version", ["bench", "1.4"])
        n = 0
        t = time.perf_counter()
        for sh in shs:
            hist = await s.send_request("blockchain.scripthash.get_history", [sh])
            proofs = await asyncio.gather(*(s.send_request("blockchain.transaction.get_merkle",
                                                            [h["tx_hash"], h["height"]]) for h in hist))
            assert len(proofs) == len(hist) and all(p["merkle"] for p in proofs)
            n += 1 + len(hist)
        return time.perf_counter() - t, n


async def bare(port: int, shs: list[str], per_sh: int) -> float:
    """The same round trips, as pings: one, then ``per_sh`` concurrent ones, per script hash."""
    async with connect_rs("127.0.0.1", port, session_factory=RPCSession) as s:
        await s.send_request("server.version", ["bench", "1.4"])
        t = time.perf_counter()
        for _ in shs:
            await s.send_request("server.ping")
            await asyncio.gather(*(s.send_request("server.ping") for _ in range(per_sh)))
        return time.perf_counter() - t


def direct(server: ElectrumServer, shs: list[str]) -> float:
    idx = server.scripts
    t = time.perf_counter()
    for sh in shs:
        for h in idx.history(bytes.fromhex(sh)[::-1]):
            assert idx.merkle(h["tx_hash"], h["height"]) is not None
    return time.perf_counter() - t


def electrumx_note() -> str:
    have_rpc = importlib.util.find_spec("eschaton.chain.rpc") is not None
    have_ex = importlib.util.find_spec("electrumx") is not None
    if have_rpc and have_ex:
        return "ElectrumX: installed, but not wired into this bench yet; the bare loop is the baseline"
    missing = [n for n, ok in (("the chain's bitcoind-compatible RPC", have_rpc), ("ElectrumX (e-x)", have_ex))
               if not ok]
    return f"ElectrumX: not available ({' and '.join(missing)} missing); the bare loop is the baseline"


async def measure(args: argparse.Namespace, datadir: Path) -> None:
    t = time.perf_counter()
    blocks = prebuild(args.scripts, args.txs, args.per_block)
    print(f"prebuilt {len(blocks)} blocks ({args.txs} wallet txs to {args.scripts} scripts) "
          f"in {time.perf_counter() - t:.1f}s")
    node = ChainNode(datadir)
    t = time.perf_counter()
    for i in range(0, len(blocks), 50):
        node.submit_blocks(blocks[i : i + 50])
    print(f"chain fed to the node in {time.perf_counter() - t:.1f}s, tip {node.tip().height}")
    server = ElectrumServer(node)
    port = await server.start()
    shs = [scripthash(script(i)) for i in range(args.scripts)]
    per_sh = args.txs // args.scripts
    rates: dict[str, list[float]] = {"served": [], "bare": [], "direct": []}
    try:
        for _ in range(args.rounds):
            secs, n = await served(port, shs)
            assert n == len(shs) * (1 + per_sh), n
            rates["served"].append(len(shs) / secs)
            rates["bare"].append(len(shs) / await bare(port, shs, per_sh))
            rates["direct"].append(len(shs) / direct(server, shs))
    finally:
        await server.stop()
        node.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(electrumx_note())
    print(f"script hashes/s (history + {per_sh} merkle proofs each; median of {args.rounds} rounds):")
    print(f"  served over Electrum        {med['served']:10.0f}")
    print(f"  bare loop (pings, baseline) {med['bare']:10.0f}   served/bare   = {med['served'] / med['bare']:.2f}")
    print(f"  direct ScriptIndex calls    {med['direct']:10.0f}   served/direct = {med['served'] / med['direct']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scripts", type=int, default=1_000)
    ap.add_argument("--txs", type=int, default=10_000)
    ap.add_argument("--per-block", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.scripts < 1 or args.txs < args.scripts or args.txs % args.scripts:
        ap.error("--txs must be a positive multiple of --scripts")
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(measure(args, Path(d)))


if __name__ == "__main__":
    main()
