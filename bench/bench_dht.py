"""The DHT: simulated lookups at 1,000 nodes with 20% churn, and proofs next to bare SHA-256.

1. The deterministic simulator (``eschaton.core.dht.sim``, the real sans-IO core): ``--nodes``
   nodes join, ``--values`` records are published to their k closest, 20% of the nodes leave
   silently and as many join, one republish interval passes, then ``--lookups`` find-values run
   from random live nodes. Prints the success rate, hops per lookup (median, p90, max) and
   queries per lookup. Goals: success >= 99.5%, median hops <= 4.
2. Proofs per second, each next to a bare ``hashlib.sha256`` loop over 65-byte inputs measured in
   the same run (the ratio is the number of bare hashes one proof operation costs):
   sparse Merkle tree inclusion/exclusion prove and verify over ``--tree`` keys, Merkle sum tree
   prove and verify, and a Bitcoin Merkle branch check (a tx proof against a header).
3. A paid two-hop query on loopback (``--paid`` queries; 0 skips it): three ``eschaton node run``
   processes in a line a - b - c with channels a->b and b->c; c alone holds the record, so each
   ``dht.query`` from a is quoted by c, forwarded by b, and paid hop by hop (two channel
   payments). Its latency (p50, p99) through the node API is printed next to two baselines of
   the same run: a bare API round trip (``dht.stats``) and one direct channel payment a->b
   (``channel.pay``, the unit a paid hop is made of). Goal: p50 <= 30 ms.
Run: .venv/bin/python bench/bench_dht.py [--nodes 1000] [--lookups 1000] [--seed 7] [--paid 100]
     [--only-paid]
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from eschaton.core import merkle  # noqa: E402
from eschaton.core.dht import records, sim, smt, sumtree  # noqa: E402
from eschaton.core.dht.txproof import TxProof  # noqa: E402
from eschaton.core.txcodec import sha256d  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def paid_latency(n: int) -> None:
    from eschaton.api.client import call
    from tests.integration.node.harness import Cluster, free_port, open_channel, poll

    with tempfile.TemporaryDirectory(prefix="bench-dht-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            urls = {x: f"tcp://127.0.0.1:{free_port()}" for x in "abc"}
            c = cluster.node("c", listen=[urls["c"]]).start()
            c.wait_ready()
            put = c.cli("dht", "put", "bench record")
            b = cluster.node("b", listen=[urls["b"]], peers=[(c.id, urls["c"])]).start()
            b.wait_ready()
            a = cluster.node("a", listen=[urls["a"]], peers=[(b.id, urls["b"])]).start()
            a.wait_ready()
            poll(lambda: a.cli("dht", "stats")["linked"] == 1 and b.cli("dht", "stats")["linked"] == 2, "linked")
            cluster.chain.mine(101, to=a.wallet("address")["address"])
            cluster.chain.mine(101, to=b.wallet("address")["address"])
            poll(lambda: a.wallet("balance")["spendable"] > 0 and b.wallet("balance")["spendable"] > 0, "funded")
            ab = open_channel(cluster.chain, a, b, 1_000_000)
            open_channel(cluster.chain, b, c, 1_000_000)

            def timed(name: str, args: dict[str, object]) -> list[float]:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    call(a.datadir, name, args)
                    out.append((time.perf_counter() - t) * 1000)
                return out

            q = {"key": put["key"], "query": '["has", ["data"]]', "max_price": 10}
            call(a.datadir, "dht.query", q)  # warm: the first query opens nothing new, but imports
            rows = [("bare API round trip (dht.stats)", timed("dht.stats", {})),
                    ("one channel payment a->b", timed("channel.pay", {"channel": ab, "amount": 1})),
                    ("paid two-hop dht.query", timed("dht.query", q))]
            base = statistics.median(rows[1][1])
            print(f"paid query on loopback, {n} each (ms):")
            for name, xs in rows:
                p50 = statistics.median(xs)
                print(f"  {name:34s} p50 {p50:7.1f}   p99 {pct(xs, 0.99):7.1f}   = {p50 / base:5.2f} payments")
            print(f"  goal: paid two-hop p50 <= 30 ms: {'met' if statistics.median(rows[2][1]) <= 30 else 'NOT met'}")
            st = a.cli("dht", "stats")["queries"]
            print(f"  a spent {st['spent_sat']} sat on {st['asked']} queries (4 sat each: c 3 + b 1)")
        finally:
            cluster.close()


def per_second(fn: Callable[[int], object], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--values", type=int, default=200)
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--churn", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tree", type=int, default=10000)
    ap.add_argument("--n", type=int, default=5000, help="operations per proof measurement")
    ap.add_argument("--paid", type=int, default=100, help="paid two-hop queries to time (0: skip)")
    ap.add_argument("--only-paid", action="store_true", help="skip the simulator and the proofs")
    a = ap.parse_args()
    if a.only_paid:
        paid_latency(a.paid)
        return

    start = time.perf_counter()
    r = sim.run(a.nodes, seed=a.seed, churn=a.churn, values=a.values, lookups=a.lookups)
    hops = sorted(r.hops)
    p90 = hops[int(0.9 * (len(hops) - 1))] if hops else float("nan")
    print(f"simulator: {r.nodes} nodes, {r.churn:.0%} churn, {r.lookups} lookups "
          f"({time.perf_counter() - start:.1f} s)")
    print(f"  success {r.success_rate:.2%} (goal >= 99.5%)   hops median {r.median_hops:g} "
          f"(goal <= 4), p90 {p90}, max {max(hops) if hops else '-'}   queries/lookup median "
          f"{r.median_queries:g}   timeouts met {r.timeouts}")

    n = a.n
    blobs = [i.to_bytes(65, "big") for i in range(n)]
    bare = per_second(lambda i: hashlib.sha256(blobs[i]).digest(), n)
    print(f"bare sha256 (65 B)           {bare:12.0f}/s")

    def show(name: str, rate: float) -> None:
        print(f"{name:28s} {rate:12.0f}/s   = {bare / rate:6.1f} bare sha256 each")

    items = {b"key%d" % i: b"value%d" % i for i in range(a.tree)}
    tree = smt.Tree(items)
    keys = list(items)
    show(f"smt prove (inclusion, {a.tree})", per_second(lambda i: tree.prove(keys[i % len(keys)]), n))
    show("smt prove (exclusion)", per_second(lambda i: tree.prove(b"absent%d" % i), n))
    inc = [tree.prove(keys[i % len(keys)]) for i in range(n)]
    exc = [tree.prove(b"absent%d" % i) for i in range(n)]
    show("smt verify inclusion", per_second(
        lambda i: smt.verify_inclusion(tree.root, keys[i % len(keys)], items[keys[i % len(keys)]],
                                       inc[i]), n))
    show("smt verify exclusion", per_second(
        lambda i: smt.verify_exclusion(tree.root, b"absent%d" % i, exc[i]), n))

    leaves = [(hashlib.sha256(b"%d" % i).digest(), i) for i in range(a.tree)]
    st = sumtree.SumTree(leaves)
    show("sum tree prove", per_second(lambda i: st.prove(i % len(leaves)), n))
    sproofs = [st.prove(i % len(leaves)) for i in range(n)]
    show("sum tree verify", per_second(
        lambda i: sumtree.verify(st.root, *leaves[i % len(leaves)], sproofs[i]), n))

    txids = [hashlib.sha256(b"tx%d" % i).digest() for i in range(2000)]
    mt = merkle.Tree(txids)
    header = b"\x01" * 36 + mt.root + b"\x02" * 12
    known = {sha256d(header)}
    txp = [records.encode(TxProof(txids[i % 2000], header, i % 2000, tuple(mt.branch(i % 2000))))
           for i in range(n)]
    ctx = records.Context(0, known.__contains__)
    show("tx proof decode+verify", per_second(
        lambda i: records.check(txp[i], records.tx_key(txids[i % 2000]), ctx), n))
    print("single runs: compare the ratios, not the rates of two runs")
    if a.paid:
        paid_latency(a.paid)


if __name__ == "__main__":
    main()
