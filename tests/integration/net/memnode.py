"""A node under tracemalloc, for the memory test: ``python -m tests.integration.net.memnode DIR``.

Prints ``{"port": P}``, then answers each stdin line ``measure`` with the traced bytes now and
at their peak since the last ``measure`` (after a full garbage collection), and the node's live
counts. The flood comes from another process, so only the node's own allocations are traced.
"""
from __future__ import annotations

import asyncio
import gc
import json
import sys
import tracemalloc

from eschaton.config.loader import parse_config
from eschaton.net.mesh import NetNode


async def main(datadir: str) -> None:
    cfg = parse_config(f'[node]\ndatadir = "{datadir}"\n[network]\nlisten = ["tcp://127.0.0.1:0"]\n'
                       "handshake_timeout = 2.0\n[network.discovery]\nenabled = false\n")
    node = await NetNode.new(cfg)
    tracemalloc.start()
    loop = asyncio.get_running_loop()
    print(json.dumps({"port": int(node.listeners[0].url.rsplit(":", 1)[1])}), flush=True)
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "measure":
        gc.collect()
        now, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        print(json.dumps({"now": now, "peak": peak, **node.stats()}), flush=True)
    await node.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
