"""A hub and its neighbours under sustained two-way 1-sat payments: what a hub that runs for
months on an SD card spends per 1,000 payments.

One hub and N neighbours (real ``eschaton node run`` processes on loopback, the chain owned by a
separate ``chain serve``), a channel from the hub to each, and 1-sat payments on every channel at
once through the nodes' local API, in runs of ``--batch`` that alternate direction (the harness:
``tests/integration/node/hub.py``). After a warm-up, the payments go on in rounds for
``--seconds``; the hub is measured after each round. Then the hub is killed with SIGKILL mid-flow
and restarted 3 s later (the unit's ``RestartSec``).

Printed per 1,000 payments on the hub (every payment goes through it):
- RSS slope: least-squares slope of the hub's VmRSS over the payment count, in MiB;
- log bytes: the hub's stdout (JSON log lines at the default verbosity), and all nodes';
- store bytes written: the hub's ``write_bytes`` (``/proc/PID/io``); the size of its
  ``channels.db`` and WAL at the end;
- chain-server queries: the hub's and all neighbours' (``node.status`` chain.requests; each
  measurement's status read costs one, included);
- fee sats: the growth of what the channels' cooperative closes would pay in fees (the fee steps
  of direction switches are a reserve returned at close; their growth is printed too);
- worst stall after the kill: the longest any channel waited for a payment once the hub was ready.
Plus the payment rate next to a bare baseline measured in the same run (one coincurve ECDSA sign
and verify, ``bench/baseline.py``), as the other benches print it.

    python bench/bench_soak.py [--neighbours 10] [--seconds 60] [--batch 25] [--step 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from bench.baseline import sign_verify_rate  # noqa: E402
from tests.integration.node.harness import Cluster  # noqa: E402
from tests.integration.node.hub import Drive, Hub, Sample  # noqa: E402

WARMUP = 100  # payments per channel before the first measurement
ROUND = 100  # payments per channel between two measurements


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--neighbours", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the measured payments")
    ap.add_argument("--batch", type=int, default=25, help="payments in one direction before switching")
    ap.add_argument("--lifetime", type=int, default=1008)
    ap.add_argument("--step", type=int, default=1,
                    help="blocks per direction switch (the default 6 runs out after ~167 switches)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            t = time.perf_counter()
            hub = Hub.start(cluster, args.neighbours, lifetime=args.lifetime, step=args.step)
            setup = time.perf_counter() - t
            hub.drive(WARMUP, args.batch)
            samples: list[Sample] = [hub.sample()]
            counts = [0]
            while samples[-1].at - samples[0].at < args.seconds:
                d = hub.drive(ROUND, args.batch)
                samples.append(hub.sample())
                counts.append(counts[-1] + d.payments)
            first, last = samples[0], samples[-1]
            paid, wall = counts[-1], last.at - first.at
            rss_slope = slope([float(c) for c in counts], [s.rss_kib / 1024 for s in samples]) * 1000

            marks: dict[str, float] = {}

            async def kill(_: Drive) -> None:
                marks["killed"], marks["ready"] = await hub.kill_and_restart(after=1.5)

            around = hub.drive(ROUND, args.batch, during=kill)
            stall = around.worst_stall(marks["ready"])
            hub.balances()  # every channel agrees on both sides after the restart
        finally:
            cluster.close()

    base = sign_verify_rate(3000)
    k = 1000 / paid
    rate = paid / wall
    print(f"hub + {args.neighbours} neighbours, batch {args.batch}, step {args.step}: set up in {setup:.1f} s; "
          f"{paid} payments measured over {wall:.1f} s ({len(samples) - 1} rounds)")
    print("per 1,000 payments on the hub:")
    print(f"  RSS slope                      {rss_slope:10.3f} MiB   (hub {first.rss_kib / 1024:.1f} -> "
          f"{last.rss_kib / 1024:.1f} MiB)")
    print("  hub RSS at each measurement    " + " ".join(f"{s.rss_kib / 1024:.1f}" for s in samples) + " MiB")
    print(f"  log bytes, hub                 {(last.hub_log_bytes - first.hub_log_bytes) * k:10.0f} B")
    print(f"  log bytes, all nodes           {(last.log_bytes - first.log_bytes) * k:10.0f} B")
    print(f"  store bytes written, hub       {(last.store_written - first.store_written) * k:10.0f} B   "
          f"(in {(last.hub_commits - first.hub_commits) * k:.0f} transactions)")
    print(f"  channels.db growth, hub        {(last.db_size - first.db_size) * k:10.0f} B   "
          f"(channels.db {last.db_size / 1e6:.1f} MB + WAL {(last.store_size - last.db_size) / 1e6:.1f} MB at the end)")
    print(f"  chain-server queries, hub      {(last.hub_queries - first.hub_queries) * k:10.2f}   "
          f"({last.hub_queries - first.hub_queries} in all, {len(samples) - 1} of them status reads)")
    print(f"  chain-server queries, spokes   {(last.spoke_queries - first.spoke_queries) * k:10.2f}   "
          f"({last.spoke_queries - first.spoke_queries} in all)")
    print(f"  fee sats (paid at close)       {(last.fee_sat - first.fee_sat) * k:10.0f}   "
          f"(value moved: 1,000 sat; fee steps held in reserve meanwhile: "
          f"{(last.reserve_sat - first.reserve_sat) * k:.0f})")
    print(f"worst stall after kill -9        {stall:10.2f} s     (hub ready {marks['ready'] - marks['killed']:.2f} s "
          f"after the kill, restarted after 3 s; {around.retries} payments tried again)")
    print(f"payment rate (all channels)      {rate:10.1f} payments/s")
    print(f"bare ECDSA sign+verify           {base:10.1f} ops/s")
    print(f"ratio payments / bare            {rate / base:10.4f}  (1 payment = {base / rate:.1f} sign+verify)")


if __name__ == "__main__":
    main()
