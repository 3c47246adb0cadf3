"""The SPV client's initial header sync: 10,000 headers, as ratios to baselines in the same run.

- Chain: an embedded regtest chain of ``--blocks`` (default 10,000) blocks in a temporary
  directory, served by ``RpcServer``; the real ElectrumX (``e-x``, dev extra) indexes it.
- Rows (each a median over ``--rounds``, each SPV round from an empty header file):
  - ElectrumX's own sync: from its start until it reports the chain's tip (it fetches every
    block over the RPC and indexes it): the issue's baseline for "the same chain".
  - SPV sync: ``ReopeningChain.electrum`` from an empty header file to the tip: negotiation,
    ``blockchain.block.headers`` in chunks of 2,016, every header checked (linkage, proof of
    work, difficulty rule, median time past) and stored in SQLite.
  - bare fetch: the same chunks fetched by a bare aiorpcx session, nothing checked or stored
    (the protocol's floor for the same data).
  - bare hash loop: sha256d over the same 10,000 raw headers in a Python loop (the floor of
    checking proof of work at all).
  - verify only: ``HeaderChain.apply`` over the prefetched headers in-process (no I/O).
- Printed: the seconds of each row and ``SPV sync / ElectrumX sync``, ``SPV sync / bare fetch``,
  ``verify only / bare hash loop``. Compare within one run: figures swing with load.

    .venv/bin/python bench/bench_electrum_sync.py [--blocks N] [--rounds N]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from aiorpcx import RPCSession, connect_rs  # noqa: E402

from eschaton.chain.embedded.engine import ChainNode  # noqa: E402
from eschaton.chain.resilient import ReopeningChain  # noqa: E402
from eschaton.chain.rpc.server import RpcServer  # noqa: E402
from eschaton.core.spv.headers import HeaderChain  # noqa: E402
from eschaton.core.spv.pow import NETWORKS  # noqa: E402
from tests.integration.electrumx import electrumx  # noqa: E402

CHUNK = 2016


async def fetch_all(port: int, height: int) -> list[bytes]:
    async with connect_rs("127.0.0.1", port, session_factory=RPCSession) as s:
        await s.send_request("server.version", ["bench", ["1.4", "1.6"]])
        out: list[bytes] = []
        start = 1
        while start <= height:
            d = await s.send_request("blockchain.block.headers", [start, min(CHUNK, height - start + 1)])
            out += [bytes.fromhex(h) for h in d["headers"]]
            start += d["count"]
        return out


async def run(blocks: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        node = ChainNode(base / "node")
        t = time.perf_counter()
        node.mine(blocks)
        print(f"chain of {blocks} blocks built in {time.perf_counter() - t:.1f} s")
        rpc = RpcServer(node, user="b", password="b")
        rpc_port = await rpc.start()
        ex_sync: list[float] = []
        spv: list[float] = []
        bare: list[float] = []
        hashing: list[float] = []
        verify: list[float] = []
        tip = node.tip().block_hash
        for r in range(rounds):
            t0 = time.perf_counter()
            async with electrumx(base / f"ex{r}", f"http://b:b@127.0.0.1:{rpc_port}/") as port:
                while True:
                    async with connect_rs("127.0.0.1", port, session_factory=RPCSession) as s:
                        await s.send_request("server.version", ["bench", "1.4"])
                        if (await s.send_request("blockchain.headers.subscribe", []))["height"] >= blocks:
                            break
                    await asyncio.sleep(0.05)
                ex_sync.append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                chain = await ReopeningChain.electrum([("127.0.0.1", port)], base / f"spv{r}.sqlite")
                assert (await chain.tip()).block_hash == tip
                spv.append(time.perf_counter() - t0)
                await chain.close()

                t0 = time.perf_counter()
                headers = await fetch_all(port, blocks)
                bare.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            for h in headers:
                hashlib.sha256(hashlib.sha256(h).digest()).digest()
            hashing.append(time.perf_counter() - t0)

            params = NETWORKS["regtest"]
            t0 = time.perf_counter()
            hc = HeaderChain(params, params.genesis_header)
            for i in range(0, len(headers), CHUNK):
                hc.apply(1 + i, headers[i:i + CHUNK])
            verify.append(time.perf_counter() - t0)
            assert hc.tip_hash() == tip
        await rpc.stop()
        node.close()

    med = statistics.median
    print(f"{'row':<28}{'seconds':>10}")
    for name, xs in (("ElectrumX's own sync", ex_sync), ("SPV sync (verify + store)", spv),
                     ("bare fetch (no checks)", bare), ("bare hash loop", hashing), ("verify only", verify)):
        print(f"{name:<28}{med(xs):>10.3f}")
    print(f"SPV sync / ElectrumX sync:      {med(spv) / med(ex_sync):.2f}x the time")
    print(f"SPV sync / bare fetch:          {med(spv) / med(bare):.2f}x the time")
    print(f"verify only / bare hash loop:   {med(verify) / med(hashing):.2f}x the time")
    print(f"SPV sync rate: {blocks / med(spv):,.0f} headers/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(run(a.blocks, a.rounds))


if __name__ == "__main__":
    main()
