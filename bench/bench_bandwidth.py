"""Cost of one bandwidth poll for N clients, next to a bare ``nft -j list counters`` of the table.

In a fresh network namespace (needs root), installs the table for N clients (one /32 each), then
times, interleaved over ``--rounds`` rounds (medians printed):
  - bare: ``nft -j list counters table inet <table>`` through subprocess, output unparsed;
  - read: ``NftBandwidth.read()`` (the same nft call, plus the JSON parse);
  - poll: ``BandwidthMeters.poll()`` (read + totals + a journal commit with fsync when any total
    changed; the counters are idle here, so this is the no-change path).
Also prints the time of ``ensure()`` (the atomic install script) for each N.
Both columns of one run share the machine's load: compare ratios, not runs.
Run: sudo .venv/bin/python bench/bench_bandwidth.py [--clients 10,100,1000] [--rounds 30]
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from eschaton.metering.bandwidth import BandwidthMeters  # noqa: E402
from meter_drivers.nft_bandwidth import BandwidthClient, NftBandwidth  # noqa: E402


def clients(n: int) -> list[BandwidthClient]:
    base = int(ipaddress.IPv4Address("10.100.0.1"))
    return [BandwidthClient(f"c{i}", (str(ipaddress.IPv4Address(base + i)),)) for i in range(n)]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(n: int, rounds: int, nft: tuple[str, ...]) -> None:
    cl = clients(n)
    bw = NftBandwidth(cl, nft=nft)
    t_ensure = timed(bw.ensure)
    bare_cmd = [*nft, "-j", "list", "counters", "table", "inet", bw.table]
    with tempfile.TemporaryDirectory() as d:
        meters = BandwidthMeters(cl, Path(d) / "bw", nft=nft, commit_interval_s=0.001)
        bare, read, poll = [], [], []
        for _ in range(rounds):
            bare.append(timed(lambda: subprocess.run(bare_cmd, capture_output=True, check=True)))
            read.append(timed(bw.read))
            poll.append(timed(meters.poll))
        meters.close()
    bw.remove()
    b, r, p = (statistics.median(x) * 1e3 for x in (bare, read, poll))
    print(f"{n:>6} clients  ensure {t_ensure * 1e3:8.1f} ms  bare {b:7.2f} ms  read {r:7.2f} ms "
          f"({r / b:4.2f}x)  poll {p:7.2f} ms ({p / b:4.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="10,100,1000")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    ip = shutil.which("ip")
    if os.geteuid() != 0 or ip is None or shutil.which("nft") is None:
        sys.exit("needs root, ip and nft (runs in a private network namespace)")
    ns = f"escbw-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run([ip, "netns", "add", ns], check=True)
    try:
        nft = (ip, "netns", "exec", ns, "nft")
        print(f"one poll vs a bare `nft -j list counters` (medians of {args.rounds}; "
              "each call runs `ip netns exec ... nft`)")
        for n in (int(x) for x in args.clients.split(",")):
            run(n, args.rounds, nft)
    finally:
        subprocess.run([ip, "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
