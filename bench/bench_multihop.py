"""Multi-hop payments between ``eschaton node run`` processes on loopback: the latency of a 5-hop
payment, and payments/s through one routing node.

Latency (``latency``):
- A line a - b - c - d - e (4 channels, each opened by the node nearer a); e issues a payment
  request for each payment, a pays it through b, c and d with ``routing.pay`` (the API call
  returns once the preimage is back at a: every hop has persisted its forward, offered its
  escrow, which its successor persisted, and learnt the preimage durably).
  Durable state on every hop: the channel and routing stores run ``synchronous=FULL``.
- Baseline in the same run: a one-hop ``channel.pay`` between a and b through the same API (one
  durable channel update, both sides fsynced), the floor a multi-hop payment builds on.
- Prints p50 and p99 of each, and their ratio.

Throughput (``throughput``):
- A hub h with four channels: p1 -> h, p2 -> h (opened by the payers) and h -> q1, h -> q2
  (opened by h). p1 and p2 pay q1 and q2 by node id (``routing.pay`` with a payee and an
  amount: no request to fetch), ``in-flight`` payments at once spread over the two payers,
  every one through h (2 hops).
- Baseline in the same run, same concurrency: ``channel.pay`` from p1 and p2 to h directly
  over the same two channels (one hop, no escrow).
- Prints payments/s of each and their ratio, and the failures (none expected). A channel holds
  at most 8 escrows at once (``max_contracts``), so ``in-flight`` stays at 6 by default.

    python bench/bench_multihop.py [payments] [in-flight] [latency|throughput|both]
"""
from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from eschaton.api.client import call  # noqa: E402
from tests.integration.node.harness import Cluster, NodeProc, free_port, poll  # noqa: E402

CAPACITY = 5_000_000


def _open(cluster: Cluster, opener: NodeProc, acceptor: NodeProc, lifetime: int) -> str:
    st = opener.cli("channel", "open", acceptor.id, str(CAPACITY), "--lifetime", str(lifetime))
    cid = str(st["channel"])
    poll(lambda: (opener.channel(cid) or {}).get("state") == "FUNDING_BROADCAST", "funding broadcast")
    cluster.chain.mine(1)
    for n in (opener, acceptor):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "OPEN", "channel open", timeout=60)
    return cid


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _nodes(cluster: Cluster, names: list[str]) -> list[NodeProc]:
    disc = free_port(socket.SOCK_DGRAM)
    nodes = [cluster.node(x, listen=["tcp://127.0.0.1:0"], discovery_port=disc) for x in names]
    for x in nodes:
        x.start()
    for x in nodes:
        x.wait_ready()
    for x in nodes:
        poll(lambda x=x: len(x.linked()) == len(nodes) - 1, "linked", timeout=60)
    return nodes


def _fund(cluster: Cluster, nodes: list[NodeProc]) -> None:
    for x in nodes:
        cluster.chain.mine(1, to=x.wallet("address")["address"])
    cluster.chain.mine(100)
    for x in nodes:
        poll(lambda x=x: x.wallet("balance")["spendable"] > 0, "coins", timeout=60)


def latency(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-multihop-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            nodes = _nodes(cluster, list("abcde"))
            _fund(cluster, nodes[:-1])
            cids = [""] * 4
            for i in range(3, -1, -1):
                cids[i] = _open(cluster, nodes[i], nodes[i + 1], 1008 + 100 * (3 - i))
            for x in nodes:
                poll(lambda x=x: len(x.api("routing.graph")["channels"]) == 4, "graph", timeout=60)
            a, e = nodes[0], nodes[-1]

            direct: list[float] = []
            for i in range(n):
                t = time.perf_counter()
                call(a.datadir, "channel.pay", {"channel": cids[0], "amount": 1, "id": f"d{i}"}, timeout=60)
                direct.append(time.perf_counter() - t)

            hop5: list[float] = []
            for i in range(n):
                req = call(e.datadir, "invoice.create", {"amount": 1000}, timeout=60)["request"]
                t = time.perf_counter()
                out = call(a.datadir, "routing.pay", {"request": req, "id": f"m{i}"}, timeout=120)
                hop5.append(time.perf_counter() - t)
                assert out["state"] == "complete", out
            p50d, p99d = pct(direct, 0.5) * 1000, pct(direct, 0.99) * 1000
            p50m, p99m = pct(hop5, 0.5) * 1000, pct(hop5, 0.99) * 1000
            print(f"one-hop channel.pay:       p50 {p50d:7.1f} ms  p99 {p99d:7.1f} ms  (n={n})")
            print(f"5-node routing.pay (4 ch): p50 {p50m:7.1f} ms  p99 {p99m:7.1f} ms  mean "
                  f"{statistics.mean(hop5) * 1000:.1f} ms")
            print(f"ratio 5-node / one-hop:    p50 {p50m / p50d:.1f}x  p99 {p99m / p99d:.1f}x")
        finally:
            cluster.close()


def _rate(jobs: list[Callable[[], bool]], in_flight: int) -> tuple[float, int]:
    """Run ``jobs`` with ``in_flight`` at a time (threads: each job is one API call); returns
    (jobs per second over the wall time, how many failed)."""
    todo = list(reversed(jobs))
    lock = threading.Lock()
    failed = [0]

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                job = todo.pop()
            try:
                ok = job()
            except Exception as e:  # counted, not fatal: the rate is what we measure
                print(f"  failed: {e}", file=sys.stderr)
                ok = False
            if not ok:
                with lock:
                    failed[0] += 1
    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(jobs) / (time.perf_counter() - t), failed[0]


def throughput(n: int, in_flight: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-multihop-hub-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            p1, p2, h, q1, q2 = _nodes(cluster, ["p1", "p2", "h", "q1", "q2"])
            _fund(cluster, [p1, p2, h])
            # The hub's outgoing channels live longer than the payers' channels need (the payer's
            # timeout grows by the hub's delta): open them first, with a longer lifetime.
            out = [_open(cluster, h, q, 1108) for q in (q1, q2)]
            inc = [_open(cluster, p, h, 1208) for p in (p1, p2)]
            for x in (p1, p2, h, q1, q2):
                poll(lambda x=x: len(x.api("routing.graph")["channels"]) == 4, "graph", timeout=60)
            del out
            payers = [(p1, inc[0]), (p2, inc[1])]

            def direct(i: int) -> Callable[[], bool]:
                p, cid = payers[i % 2]
                return lambda: bool(call(p.datadir, "channel.pay", {"channel": cid, "amount": 1, "id": f"d{i}"},
                                         timeout=120))

            def routed(i: int) -> Callable[[], bool]:
                p = payers[i % 2][0]
                q = (q1, q2)[(i // 2) % 2]
                return lambda: call(p.datadir, "routing.pay", {"payee": q.id, "amount": 1000, "id": f"m{i}"},
                                    timeout=120)["state"] == "complete"

            warm = [routed(-1 - i) for i in range(4)]  # first payments fill caches (routes, sessions)
            _rate(warm, 2)
            rate_d, fail_d = _rate([direct(i) for i in range(n)], in_flight)
            rate_m, fail_m = _rate([routed(i) for i in range(n)], in_flight)
            print(f"one-hop channel.pay p->h:        {rate_d:7.1f} payments/s  ({n} payments, {in_flight} in "
                  f"flight, {fail_d} failed)")
            print(f"routing.pay p->h->q (one router): {rate_m:7.1f} payments/s  ({n} payments, {in_flight} in "
                  f"flight, {fail_m} failed)")
            print(f"ratio routed / one-hop:           {rate_m / rate_d:.2f}x")
        finally:
            cluster.close()


def main(n: int, in_flight: int, which: str) -> None:
    if which in ("latency", "both"):
        latency(n)
    if which in ("throughput", "both"):
        throughput(n * 4, in_flight)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 50, int(args[1]) if len(args) > 1 else 6, args[2] if len(args) > 2 else "both")
