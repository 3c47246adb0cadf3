"""A legitimate peer's channel payments while its peer is flooded, against the same payments
without the flood, measured in one run on two ``eschaton node run`` processes on loopback.

The flood (``tests/integration/net/flood.py``) comes from other loopback addresses: idle TCP
connections, garbage bytes (half with a 64 KiB length prefix) and Noise handshakes from fresh
random keys, round after round while the payments run. Printed: median and p90 latency of one
``channel.pay`` without and with the flood, their ratio, the flooded node's RSS after each round
of a second, payment-free phase (it should level off, not climb), its live counts at the end,
and how many log lines it wrote during the flood.

    python bench/bench_flood.py [payments] [rounds]
"""
from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from bench.bench_node import rss_kib  # noqa: E402
from eschaton.api.client import call_async  # noqa: E402
from eschaton.core.link.identity import NodeId  # noqa: E402
from tests.integration.net.flood import FloodThread, flood  # noqa: E402
from tests.integration.node.harness import Cluster, NodeProc, free_port, open_channel, poll  # noqa: E402


async def pays(payer: NodeProc, cid: str, n: int) -> list[float]:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        await call_async(payer.datadir, "channel.pay", {"channel": cid, "amount": 1000}, timeout=60)
        lat.append(time.perf_counter() - t)
    return lat


def p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp))
        try:
            disc = free_port(socket.SOCK_DGRAM)
            pb = free_port()
            a = c.node("a", listen=["tcp://127.0.0.1:0"], discovery_port=disc)
            b = c.node("b", listen=[f"tcp://127.0.0.1:{pb}"], discovery_port=disc)
            a.start().wait_ready()
            b.start().wait_ready()
            poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")
            c.chain.mine(101, to=a.wallet("address")["address"])
            poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
            cid = open_channel(c.chain, a, b, 5_000_000)
            asyncio.run(pays(a, cid, 5))  # warm up
            quiet = asyncio.run(pays(a, cid, n))
            bid = NodeId.from_hex(b.id)
            logs0 = len(b.logs)
            f = FloodThread("127.0.0.1", pb, bid, idle=300, garbage=100, strangers=30, hold=3.0).start()
            time.sleep(2.0)  # the flood is under way
            loud = asyncio.run(pays(a, cid, n))
            stats = f.stop(120)
            flood_lines = len(b.logs) - logs0
            tracebacks = sum("exc" in r for r in b.logs[logs0:])
            assert b.proc is not None
            rss = [rss_kib(b.proc.pid)]
            for _ in range(rounds):
                asyncio.run(flood("127.0.0.1", pb, bid, idle=0, garbage=300, strangers=0, hold=3.0))
                rss.append(rss_kib(b.proc.pid))
            status = b.api("node.status")
        finally:
            c.close()
    mq, ml = statistics.median(quiet), statistics.median(loud)
    print(f"payments: {n} each; flood: {f.rounds_done} rounds, {stats.opened} connections accepted, "
          f"{stats.closed_by_node} closed by the node, {stats.refused} not accepted, "
          f"{stats.strangers_linked} strangers linked, {stats.strangers_refused} refused")
    print(f"pay latency without flood: median {mq * 1000:.1f} ms, p90 {p90(quiet) * 1000:.1f} ms")
    print(f"pay latency during flood:  median {ml * 1000:.1f} ms, p90 {p90(loud) * 1000:.1f} ms")
    print(f"ratio flood / no flood (median): {ml / mq:.2f}")
    print(f"flooded node log lines during the flood: {flood_lines} ({tracebacks} with tracebacks)")
    print("flooded node RSS (MiB) before and after each round of 300 garbage connections: "
          + " ".join(f"{r / 1024:.1f}" for r in rss))
    print(f"flooded node live counts after: {status.get('net')}")


if __name__ == "__main__":
    main()
