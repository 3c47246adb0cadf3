"""What a re-anchor costs a channel with continuous two-way flow: two ``eschaton node run``
processes on loopback, default channel parameters (lifetime 1008, step 6: 167 direction
switches), 1-sat payments alternating directions (every payment a switch: no turn dwell) through the local
API, no block mined. The opener's node re-anchors when the budget runs low; the payments keep
flowing over the new anchor before its transaction confirms.

Prints the latency of the payment that waited for the re-anchor to be signed (the first one
on the new anchor) against the run's median payment, as a ratio (the baseline is the same run's
ordinary switching payment), and the number of payments refused (must be 0) and blocks mined
meanwhile (0).

    python bench/bench_reanchor.py [payments after the re-anchor]
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from eschaton.api.client import call_async  # noqa: E402
from tests.integration.node.harness import Cluster, channel_pair, pay  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def flow(nodes: dict[str, object], cid: str, tail: int) -> tuple[list[float], list[int], int]:
    """Alternate payments until ``tail`` payments after the first re-anchor; latencies, the
    indexes of the first payment on each new anchor, and refusals."""
    lat: list[float] = []
    moved: list[int] = []
    refused = 0
    funding = ""
    payer, payee = "b", "a"
    after = 0
    while after < tail and len(lat) < 2_000 and refused < 5:
        t = time.perf_counter()
        try:
            st = await call_async(nodes[payer].datadir, "channel.pay", {"channel": cid, "amount": 1})  # type: ignore[attr-defined]
        except Exception:  # a refusal is what this measures: count it
            refused += 1
            st = None
        lat.append(time.perf_counter() - t)
        if st is not None:
            if funding and st["funding_txid"] != funding:
                moved.append(len(lat) - 1)
            funding = st["funding_txid"]
        after += bool(moved)
        payer, payee = payee, payer
    return lat, moved, refused


def main() -> None:
    tail = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory(prefix="bench-reanchor-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            a, b, cid = channel_pair(cluster, 10_000_000, sections=["[channel]", "turn_dwell_ms = 0"])
            pay(a, b, cid, 1_000_000)
            h0 = cluster.chain.height()
            lat, moved, refused = asyncio.run(flow({"a": a, "b": b}, cid, tail))
            blocks = cluster.chain.height() - h0
            st = a.channel(cid) or {}
        finally:
            cluster.close()
    med = pct(lat, 50)
    print(f"payments                           {len(lat):8d}   (every one a direction switch, 1 sat)")
    print(f"re-anchors                         {len(moved):8d}   blocks mined meanwhile {blocks}")
    print(f"refused                            {refused:8d}")
    print(f"payment latency p50 / p99 / max    {med * 1e3:6.1f} / {pct(lat, 99) * 1e3:6.1f} / "
          f"{max(lat) * 1e3:6.1f} ms")
    for i in moved:
        print(f"first payment on the new anchor    {lat[i] * 1e3:6.1f} ms   ratio to p50 {lat[i] / med:6.1f}")
    print(f"unconfirmed re-anchors at the end  {st.get('unconfirmed_anchors')}")


if __name__ == "__main__":
    main()
