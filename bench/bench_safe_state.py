"""How long the service's ``ExecStopPost`` (``eschaton hw safe-state``) takes to close a valve a
killed node left open, against a bare Python start measured in the same run.

- Each run: a mock GPIO line file (``hw.mock_lines``) says a normally-closed solenoid is driven
  open (active-low relay: level low), as a SIGKILLed node leaves it; the command is run as a new
  process with the config; the time is from spawning it to its exit, when the line is high
  (closed).
- Baseline: ``python -c pass`` with the same interpreter (the floor of any new process), and
  ``python -c "import gpiozero"`` (the GPIO library the command needs).
- The goal is well under 2 s on a Pi: the valve must not run long after the node is gone.

    python bench/bench_safe_state.py [runs]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

from hw.mock_lines import ENV as LINES_ENV  # noqa: E402
from hw.mock_lines import read_lines, write_line  # noqa: E402

CONFIG = '[hardware]\nbackend = "mock"\n\n[[valve]]\nname = "v"\ntype = "solenoid_nc"\npin = 23\n'


def _time(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "node.toml"
        cfg.write_text(CONFIG)
        lines = Path(d) / "lines.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "firmware"), str(ROOT)]))
        env[LINES_ENV] = str(lines)
        cmd = [sys.executable, "-m", "eschaton", "hw", "safe-state", "--config", str(cfg)]
        bare = [sys.executable, "-c", "pass"]
        gz = [sys.executable, "-c", "import gpiozero"]
        t_cmd, t_bare, t_gz = [], [], []
        for _ in range(runs):
            write_line(lines, 23, "output", False)  # left energised (open) by a killed node
            t_cmd.append(_time(cmd, env))
            assert read_lines(lines)[23].level is True, "the valve was not closed"
            t_bare.append(_time(bare, env))
            t_gz.append(_time(gz, env))
    cmd_s, bare_s, gz_s = (statistics.median(x) for x in (t_cmd, t_bare, t_gz))
    print(f"safe-state, valve open -> closed: {cmd_s * 1000:.0f} ms (median of {runs})")
    print(f"bare python start:                {bare_s * 1000:.0f} ms  -> ratio {cmd_s / bare_s:.1f}x")
    print(f"python + import gpiozero:         {gz_s * 1000:.0f} ms  -> ratio {cmd_s / gz_s:.1f}x")


if __name__ == "__main__":
    main()
