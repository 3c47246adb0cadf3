"""The CLI's round trip to a running node: wall time of one ``eschaton`` process that asks the
node's local API and prints the answer, against a bare interpreter start in the same run.

- Node: one ``eschaton node run`` in a temporary directory with its own embedded chain (the way
  the integration tests start one). Nothing is measured inside the node.
- Commands: ``node status`` found by ``--datadir`` and ``channel list`` found by ``--config``
  (the config path reads and validates the TOML first), each a fresh process of the installed
  console script, as an operator or a script on the node runs it.
- Baseline: ``python -c pass`` with the same interpreter and environment (``site`` included),
  interleaved with the commands so that both see the same load on a shared machine.
- Printed: the median and p90 over ``runs`` (default 20) of each, and each median's ratio to the
  baseline's. The target on a desktop x86 core is a round trip within 6x a bare start.

    python bench/bench_cli.py [runs]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from tests.integration.node.harness import NodeProc, _env, eschaton_cmd  # noqa: E402


def wall(argv: Sequence[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.decode()[-500:]}")
    return elapsed


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    env = _env()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        node = NodeProc(Path(tmp), "solo", chain_dir=None)
        try:
            node.start().wait_ready(timeout=120)
            cases: dict[str, list[str]] = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "eschaton node status --datadir": [*eschaton_cmd(), "node", "status", "--datadir",
                                                   str(node.datadir)],
                "eschaton channel list --config": [*eschaton_cmd(), "channel", "list", "--config",
                                                   str(node.config)],
            }
            for argv in cases.values():  # warm the page cache and the node's first-request paths
                wall(argv, env)
            times: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(runs):
                for label, argv in cases.items():
                    times[label].append(wall(argv, env))
        finally:
            node.stop()

    base = statistics.median(times["python -c pass"])
    for label, xs in times.items():
        med = statistics.median(xs)
        print(f"{label:<34} median {med * 1e3:7.1f} ms   p90 {p90(xs) * 1e3:7.1f} ms   "
              f"ratio to bare start {med / base:5.2f}   (n={len(xs)})")


if __name__ == "__main__":
    main()
