"""The chain's JSON-RPC: requests per second against a bare aiohttp server in the same run.

- Chain: an embedded regtest chain of 1,000 blocks in a temporary directory, served by
  ``RpcServer`` on loopback; one aiohttp client session with keep-alive, as ElectrumX uses.
- Rows: single ``getblockhash`` requests (one HTTP round trip each), the same 1,000 calls in one
  JSON-RPC batch, and 1,000 ``getblock [hash, 0]`` in one batch (what ElectrumX's initial sync
  sends).
- Baseline: a bare aiohttp handler that reads the body and answers a fixed JSON reply, on the
  same loop and client, interleaved with the single-request row so both see the same load.
- Printed: the median over ``rounds`` (default 5) of each row, and the single-request row's
  ratio to the baseline (1.0 = the RPC costs nothing beyond HTTP itself).

    python bench/bench_rpc.py [rounds]
"""
from __future__ import annotations

import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from eschaton.chain.embedded.engine import ChainNode  # noqa: E402
from eschaton.chain.rpc.server import RpcServer  # noqa: E402

N = 1000


async def run(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        node = ChainNode(Path(d))
        node.mine(N)
        server = RpcServer(node)
        port = await server.start()

        async def bare(req: web.Request) -> web.Response:
            await req.read()
            return web.Response(body=b'{"result": 1, "error": null, "id": 1}',
                                headers={"Content-Type": "application/json"})

        app = web.Application()
        app.router.add_post("/", bare)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        bare_port = runner.addresses[0][1]
        cookie = (node.chain_dir / ".cookie").read_text()
        auth = {"Authorization": "Basic " + base64.b64encode(cookie.encode()).decode()}
        rows: dict[str, list[float]] = {"bare aiohttp, single": [], "getblockhash, single": [],
                                        "getblockhash, one batch": [], "getblock 0, one batch": []}
        try:
            async with aiohttp.ClientSession() as s:
                async def post(p: int, payload: object) -> object:
                    async with s.post(f"http://127.0.0.1:{p}/", data=json.dumps(payload), headers=auth) as r:
                        return await r.json()

                hashes = [r["result"] for r in await post(port, [  # type: ignore[union-attr, index]
                    {"method": "getblockhash", "params": [h], "id": h} for h in range(N)])]
                for _ in range(rounds):
                    for label, p in (("bare aiohttp, single", bare_port), ("getblockhash, single", port)):
                        t = time.perf_counter()
                        for h in range(N):
                            await post(p, {"method": "getblockhash", "params": [h], "id": h})
                        rows[label].append(N / (time.perf_counter() - t))
                    t = time.perf_counter()
                    await post(port, [{"method": "getblockhash", "params": [h], "id": h} for h in range(N)])
                    rows["getblockhash, one batch"].append(N / (time.perf_counter() - t))
                    t = time.perf_counter()
                    await post(port, [{"method": "getblock", "params": [h, 0], "id": i} for i, h in enumerate(hashes)])
                    rows["getblock 0, one batch"].append(N / (time.perf_counter() - t))
        finally:
            await runner.cleanup()
            await server.stop()
            node.close()
    med = {k: statistics.median(v) for k, v in rows.items()}
    for label, rate in med.items():
        print(f"{label:<26} {rate:9.0f} calls/s")
    print(f"single-request ratio to bare aiohttp: {med['getblockhash, single'] / med['bare aiohttp, single']:.2f}")


def main() -> None:
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5))


if __name__ == "__main__":
    main()
