"""Timestamping: one round of 1,000,000 digests, every proof, and stamps accepted over the API.

- Tree: ``Tree`` over n digests (a nonce per leaf, so 2n-1 SHA-256 in all, each over 48 or 64
  bytes: two compression blocks). Once it is built every proof is there: ``path_bytes(i)``
  encodes one from the levels on demand (timed over a sample, per proof). Then the encoded
  path of every digest at once (``all_path_bytes``: the proofs are 700 bytes each, 0.7 GB for
  a million). Baseline: a bare ``hashlib.sha256`` loop over the same n digests (32 bytes each,
  one block), in the same run: the tree cannot cost less than about 2x that.
- Proof size: the longest encoded path (digest -> round root, before the transaction and block
  part) against the goal 33*ceil(log2 n) + 100 bytes, and a full ``.ots`` file of one digest in
  a block of 1,000 transactions for scale.
- API: a real ``eschaton node run`` on its own embedded chain (rounds of 1 s; nothing is
  committed during the run, so only acceptance is measured); ``stamp.submit`` of one digest per
  request, and of 1,000 per request, each answered only after the digests are in SQLite
  (``synchronous=FULL``). Baseline: ``node.health`` over the same socket (a request that
  writes nothing), interleaved.

    python bench/bench_timestamp.py [n]
"""
from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from eschaton.api.client import call  # noqa: E402
from eschaton.core.stamp.tree import NONCE_LEN, Tree  # noqa: E402


class Clock:
    """Wall time and this process's CPU time (on a shared machine the CPU time is what the code
    costs; the wall time adds the waits for a core)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def __str__(self) -> str:
        return f"{self.wall:7.3f} s wall {self.cpu:7.3f} s cpu"


def tree_rows(n: int) -> None:
    digests = [hashlib.sha256(i.to_bytes(8, "little")).digest() for i in range(n)]
    nonces = os.urandom(NONCE_LEN * n)
    h = hashlib.sha256
    with Clock() as bare:
        for d in digests:
            h(d).digest()
    with Clock() as t_tree:
        tree = Tree(digests, nonces)
    # Every proof on demand: path_bytes(i) from the levels, timed over a spread sample.
    sample = range(0, n, max(1, n // 20_000))
    with Clock() as t_one:
        for i in sample:
            tree.path_bytes(i)
    with Clock() as t_paths:
        paths = tree.all_path_bytes()
    assert all(paths[i] == tree.path_bytes(i) for i in sample)
    longest = max(len(p) for p in paths)
    goal = 33 * math.ceil(math.log2(n)) + 100
    total_wall, total_cpu = t_tree.wall + t_paths.wall, t_tree.cpu + t_paths.cpu
    print(f"bare sha256 loop, {n:,} digests            {bare}")
    print(f"tree: root and every level ({len(tree.levels) - 1} levels)      {t_tree}  "
          f"({t_tree.cpu / bare.cpu:.2f}x the bare loop's cpu; goal <= 3 s)")
    print(f"one proof on demand (path_bytes)            {t_one.cpu / len(sample) * 1e6:7.1f} us cpu")
    print(f"every proof encoded at once ({len(paths):,})     {t_paths}")
    print(f"tree + every proof encoded                  {total_wall:7.3f} s wall {total_cpu:7.3f} s cpu  "
          f"({total_cpu / bare.cpu:.2f}x the bare loop's cpu)")
    print(f"longest proof, digest -> root            {longest} bytes (goal {goal}: "
          f"{'met' if longest <= goal else 'MISSED'})")
    del paths, tree


def api_rows(reqs: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        dd = Path(d)
        cfg = dd / "node.toml"
        cfg.write_text(f'[node]\ndatadir = "{dd / "n"}"\n\n[network.discovery]\nenabled = false\n\n'
                       '[stamp]\nround_s = 1.0\nmax_digests = 10000000\n')
        proc = subprocess.Popen([sys.executable, "-m", "eschaton", "node", "run", "--config", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, "PYTHONPATH": f"{ROOT / 'firmware'}:{ROOT}"})
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if '"node ready"' in line:
                    break
            else:
                raise SystemExit("node did not start")
            datadir = dd / "n"
            t_bare = t_one = 0.0
            for i in range(reqs):
                t = time.perf_counter()
                call(datadir, "node.health", {})
                t_bare += time.perf_counter() - t
                t = time.perf_counter()
                call(datadir, "stamp.submit", {"digests": hashlib.sha256(b"one%d" % i).hexdigest()})
                t_one += time.perf_counter() - t
            batches = max(1, reqs // 20)
            t = time.perf_counter()
            for b in range(batches):
                ds = ",".join(hashlib.sha256(b"batch%d-%d" % (b, i)).hexdigest() for i in range(1000))
                call(datadir, "stamp.submit", {"digests": ds})
            t_batch = time.perf_counter() - t
            print(f"API node.health (baseline)               {reqs / t_bare:9.0f} req/s")
            print(f"API stamp.submit, 1 digest/request       {reqs / t_one:9.0f} stamps/s "
                  f"({t_one / t_bare:.2f}x the baseline's time per request)")
            print(f"API stamp.submit, 1,000 digests/request  {batches * 1000 / t_batch:9.0f} stamps/s")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    tree_rows(n)
    api_rows(200)
