"""Durable channel updates per second between two endpoints, next to a bare baseline.

Each update: the payer builds the next version, signs it, commits its state with fsync (SQLite
WAL, synchronous=FULL), hands the message over; the payee rebuilds and checks the version,
verifies the signature, commits with fsync, and acks; the payer records the ack. The baseline in
the same run is a bare loop of one ECDSA sign plus one verify of a 32-byte digest (coincurve),
the cryptographic floor of an update. Prints each rate and its ratio to the baseline.

Modes: "one at a time" waits for each ack before the next version (two fsyncs per update);
"pipelined" keeps up to ``MAX_INFLIGHT`` versions in flight and group-commits each burst
(``ChannelEndpoint.batch``), still fsyncing every state before its signature or ack leaves. The
in-process rows run both endpoints on one core; the last row (``bench_channel_link``) runs them
as two processes over the node's encrypted link on loopback.

    python bench/bench_channel.py [updates]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from bench import bench_channel_link  # noqa: E402
from bench.baseline import sign_verify_rate  # noqa: E402
from bench.bench_channel_link import HEIGHT, endpoint, k, open_channel, payout  # noqa: E402
from eschaton.core.channel.messages import Message  # noqa: E402
from eschaton.core.channel.updates import MAX_INFLIGHT  # noqa: E402


def bare(n: int) -> float:
    return sign_verify_rate(n)


def commits(n: int, d: Path) -> float:
    """Bare SQLite WAL synchronous=FULL commits of a 3 kB row: the disk's durability ceiling."""
    import sqlite3

    db = sqlite3.connect(str(d / "bare.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    t = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO t VALUES (1, ?)", ("x" * 3000 + str(i),))
        db.execute("COMMIT")
    rate = n / (time.perf_counter() - t)
    db.close()
    return rate


def channel(n: int, d: Path, switch_every: int = 0, fsync: bool = True, window: int = 1) -> float:
    """Updates/s. ``window`` > 1: the payer pipelines that many versions per group commit, and
    each side takes the other's burst of messages in one group commit (``ChannelEndpoint.batch``)."""
    q: deque[tuple[str, Message]] = deque()
    eps = {name: endpoint(name, d, lambda m, s=name: q.append((s, m)), fsync=fsync) for name in ("a", "b")}

    def flush() -> None:
        while q:
            s = q[0][0]
            to = "b" if s == "a" else "a"
            burst = []
            while q and q[0][0] == s:
                burst.append(q.popleft()[1])
            with eps[to].batch() if window > 1 else nullcontext():
                for m in burst:
                    eps[to].receive(m, HEIGHT, {"payout_script": payout(to)} if m.NAME == "open_channel" else None)

    cid = k("bench-channel")
    open_channel(eps["a"], cid)
    flush()
    for ep in eps.values():
        ch = ep.channels[cid]
        ep.execute(ch, ch.on_block(HEIGHT, 1))
    flush()
    t = time.perf_counter()
    who = "a"
    i = 0
    while i < n:
        if switch_every and i % switch_every == 0 and i:
            who = "b" if who == "a" else "a"
            ch = eps[who].channels[cid]
            eps[who].execute(ch, ch.request_turn())
            flush()
        burst = min(window, n - i, switch_every - i % switch_every if switch_every else n)
        with eps[who].batch() if window > 1 else nullcontext():
            for _ in range(burst):
                eps[who].call(cid, "pay", 10 if who == "a" else 1, HEIGHT)
        i += burst
        flush()
    rate = n / (time.perf_counter() - t)
    for ep in eps.values():
        ep.store.close()
    return rate


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4_000
    base = bare(n)
    rows: list[tuple[str, float]] = []
    for label, kw in [
        ("one at a time, one direction", {}),
        ("one at a time, switch every 10", {"switch_every": 10}),
        (f"pipelined ({MAX_INFLIGHT} in flight), one direction", {"window": MAX_INFLIGHT}),
        (f"pipelined ({MAX_INFLIGHT} in flight), switch every 10", {"window": MAX_INFLIGHT, "switch_every": 10}),
        ("pipelined, store without fsync (CPU)", {"window": MAX_INFLIGHT, "fsync": False}),
    ]:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
            rows.append((label, channel(n if "switch_every" not in kw else n // 2, Path(d) / "c", **kw)))
    rows.append(("pipelined, 2 processes, encrypted link", bench_channel_link.run(n)))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        disk = commits(n, Path(d))
    print("durable channel updates/s (fsync before every signature and every ack)")
    print(f"{'bare sign+verify loop':44}{base:10.0f} /s")
    for label, rate in rows:
        print(f"{label:44}{rate:10.0f} /s   ratio {rate / base:.3f}")
    print(f"{'bare FULL commits (3 kB row)':44}{disk:10.0f} /s   (one at a time needs 2 per update)")
    print("goal: >= 3,000 updates/s and >= 0.25 of bare")


if __name__ == "__main__":
    main()
