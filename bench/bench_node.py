"""Two ``eschaton node run`` processes on loopback: durable channel payments per second through
the local API, latency per payment, idle memory, and time from process start to READY.

- Payments: sequential ``channel.pay`` calls from one asyncio loop through the API client
  (``eschaton.api.client.call_async``: one HTTP request on the unix socket per payment). A call
  returns only when the payee has persisted the version (fsync) and acknowledged it, and the
  payer has recorded the acknowledgement. Measured one way (the payer keeps the turn) and with
  alternating directions (each payment first takes the turn from the other side).
- Baseline in the same run: a bare loop of one coincurve ECDSA sign plus one verify of a 32-byte
  digest, the cryptographic floor of one update. The ratio says how far the whole path (HTTP,
  JSON, channel core, two fsyncs, the encrypted link both ways) is from that floor.
- Idle memory: VmRSS of each node process from /proc after it has linked and settled.
- Start to READY: from spawning ``node run`` to the ``READY=1`` datagram on $NOTIFY_SOCKET.

    python bench/bench_node.py [payments]
"""
from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from bench.baseline import sign_verify_rate  # noqa: E402
from eschaton.api.client import call_async  # noqa: E402
from tests.integration.node.harness import (  # noqa: E402
    Cluster,
    NodeProc,
    free_port,
    open_channel,
    poll,
    run_cli,
)


def bare(n: int) -> float:
    return sign_verify_rate(n)


def start_to_ready(node: NodeProc, sock: socket.socket) -> float:
    t = time.perf_counter()
    node.start(env={"NOTIFY_SOCKET": sock.getsockname()})
    sock.settimeout(120)
    while b"READY=1" not in sock.recv(4096).split(b"\n"):
        pass
    elapsed = time.perf_counter() - t
    node.wait_ready()
    return elapsed


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def pays(plan: list[NodeProc], cid: str, amount: int) -> list[float]:
    """One payment per entry of ``plan`` (the payer), sequentially; latency of each in seconds."""
    lat = []
    for payer in plan:
        t = time.perf_counter()
        await call_async(payer.datadir, "channel.pay", {"channel": cid, "amount": amount})
        lat.append(time.perf_counter() - t)
    return lat


async def concurrent_pays(payer: NodeProc, cid: str, amount: int, callers: int, each: int) -> float:
    """``callers`` API clients paying at once (pipelined in the node); payments/s wall clock."""
    t = time.perf_counter()
    await asyncio.gather(*(pays([payer] * each, cid, amount) for _ in range(callers)))
    return callers * each / (time.perf_counter() - t)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def report(label: str, lat: list[float]) -> float:
    rate = len(lat) / sum(lat)
    print(f"{label:<34} {rate:8.1f} payments/s   p50 {pct(lat, 50) * 1e3:6.1f} ms   "
          f"p99 {pct(lat, 99) * 1e3:6.1f} ms   (n={len(lat)})")
    return rate


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        root = Path(tmp)
        cluster = Cluster(root)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(root / "notify.sock"))
        try:
            disc = free_port(socket.SOCK_DGRAM)
            a, b = (cluster.node(x, listen=["tcp://127.0.0.1:0"], discovery_port=disc) for x in "ab")
            ready_a = start_to_ready(a, notify)  # fresh datadir, creates and owns the chain
            ready_b = start_to_ready(b, notify)  # fresh datadir, a client of a's chain
            poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")
            time.sleep(2.0)  # let start-up garbage settle before reading idle memory
            rss = {x.name: rss_kib(x.proc.pid) for x in (a, b) if x.proc is not None}

            cluster.chain.mine(101, to=a.wallet("address")["address"])
            poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
            # step 1: 1008 direction switches fit in the default lifetime (alternating payments).
            cid = open_channel(cluster.chain, a, b, 100_000_000, "--step", "1")
            asyncio.run(pays([a] * 5, cid, 1))  # warm-up (first turn, connections, caches)
            v0 = a.api("channel.list")[0]["version"]

            t = time.perf_counter()
            one_way = asyncio.run(pays([a] * n, cid, 1))
            wall = time.perf_counter() - t
            callers = 16
            each = max(1, n // callers)
            pipelined = asyncio.run(concurrent_pays(a, cid, 1, callers, each))
            alt_n = min(n, 200)
            # b pays the fee step of every switch it makes: give it a balance first.
            asyncio.run(pays([a], cid, 10_000_000))
            alternating = asyncio.run(pays([b, a] * (alt_n // 2), cid, 1))
            cli_lat = []
            for _ in range(5):
                t = time.perf_counter()
                run_cli("channel", "pay", cid, "1", "--config", str(a.config))
                cli_lat.append(time.perf_counter() - t)
            final = a.api("channel.list")[0]
            # every payment counted
            assert final["version"] == v0 + n + callers * each + 1 + 2 * (alt_n // 2) + 5
        finally:
            notify.close()
            cluster.close()

    base = bare(3000)
    print(f"node start to READY=1 (chain owner) {ready_a * 1e3:8.0f} ms")
    print(f"node start to READY=1 (chain client){ready_b * 1e3:8.0f} ms")
    print(f"idle RSS                           a {rss['a'] / 1024:6.1f} MiB   b {rss['b'] / 1024:6.1f} MiB")
    rate = report("API pay, one way", one_way)
    report("API pay, alternating directions", alternating)
    report("CLI pay (process per payment)", cli_lat)
    print(f"one-way wall clock                 {n / wall:8.1f} payments/s")
    print(f"{callers} callers at once (pipelined)     {pipelined:8.1f} payments/s")
    print(f"bare ECDSA sign+verify             {base:8.1f} ops/s")
    print(f"ratio payments / bare sign+verify  {rate / base:8.4f}  (1 payment = {base / rate:.1f} sign+verify)")


if __name__ == "__main__":
    main()
