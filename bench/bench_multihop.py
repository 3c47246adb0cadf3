"""Five ``eschaton node run`` processes in a line on loopback: the latency of a 5-hop payment.

- A line a - b - c - d - e (4 channels, each opened by the node nearer a); e issues a payment
  request for each payment, a pays it through b, c and d with ``routing.pay`` (the API call
  returns once the preimage is back at a: every hop has persisted its forward, offered its
  escrow, which its successor persisted and acknowledged, and learnt the preimage durably).
  Durable state on every hop: the channel and routing stores run ``synchronous=FULL``.
- Baseline in the same run: a one-hop ``channel.pay`` between a and b through the same API (one
  durable channel update, both sides fsynced), the floor a multi-hop payment builds on.
- Prints p50 and p99 of each, and their ratio. Not measured here: payments/s through one
  router with many channels.

    python bench/bench_multihop.py [payments]
"""
from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import time
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


def main(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-multihop-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            disc = free_port(socket.SOCK_DGRAM)
            nodes = [cluster.node(x, listen=["tcp://127.0.0.1:0"], discovery_port=disc) for x in "abcde"]
            for x in nodes:
                x.start()
            for x in nodes:
                x.wait_ready()
            for x in nodes:
                poll(lambda x=x: len(x.linked()) == 4, "linked", timeout=60)
            for x in nodes[:-1]:
                cluster.chain.mine(1, to=x.wallet("address")["address"])
            cluster.chain.mine(100)
            for x in nodes[:-1]:
                poll(lambda x=x: x.wallet("balance")["spendable"] > 0, "coins", timeout=60)
            cids = [""] * 4
            for i in range(3, -1, -1):
                cids[i] = _open(cluster, nodes[i], nodes[i + 1], 1008 + 100 * (3 - i))
            for x in nodes:
                poll(lambda x=x: len(x.api("routing.graph")["channels"]) == 4, "graph", timeout=60)
            a, b, e = nodes[0], nodes[1], nodes[-1]

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
            del b
            p50d, p99d = pct(direct, 0.5) * 1000, pct(direct, 0.99) * 1000
            p50m, p99m = pct(hop5, 0.5) * 1000, pct(hop5, 0.99) * 1000
            print(f"one-hop channel.pay:       p50 {p50d:7.1f} ms  p99 {p99d:7.1f} ms  (n={n})")
            print(f"5-node routing.pay (4 ch): p50 {p50m:7.1f} ms  p99 {p99m:7.1f} ms  mean "
                  f"{statistics.mean(hop5) * 1000:.1f} ms")
            print(f"ratio 5-node / one-hop:    p50 {p50m / p50d:.1f}x  p99 {p99m / p99d:.1f}x")
        finally:
            cluster.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
