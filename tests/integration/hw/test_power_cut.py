"""Power cut: a process counting a 1 kHz pulse train is SIGKILLed while pulses flow, repeatedly.

After each restart the stored total must be within 1 s of pulses of the true count and never
above it. The true count is exact: the generator records each pulse's number in a shared memory
map *before* driving it, so the recorded truth is never below what the counter saw.

The child commits every 0.75 s (``commit_interval_s``; the default is 1.0 s) so that the journal's
promise "a power cut loses at most ~1 s" is checked against a hard 1 s bound with room for the
fsync and the 50 ms polling step on a loaded machine.
"""
from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from eschaton.metering.journal import read_committed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

RATE = 1000.0
INTERVAL = 0.75
ROOT = Path(__file__).resolve().parents[3]
CHILD = Path(__file__).with_name("pulse_counter_proc.py")


def _truth(path: Path) -> int:
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 8) as m:
        return int(struct.unpack_from("<q", m, 0)[0])


def test_sigkill_while_counting_never_double_counts(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'firmware'}")
    journal_dir = tmp_path / "metering"
    true_total = 0  # every pulse driven across all runs (pulses while "off" are not driven)
    lost_total = 0
    for run, seconds in enumerate((1.3, 2.1, 1.7, 2.6)):
        truth_file = tmp_path / f"truth-{run}"
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(tmp_path), str(RATE), str(INTERVAL), str(truth_file)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("ready "), child.stderr.read() if child.stderr else line
            base = int(line.split()[1])
            stored_before = read_committed(journal_dir).get("water")
            # The count resumes exactly from what was committed before the last cut.
            assert base == (0 if stored_before is None else stored_before.total)
            try:
                child.wait(timeout=seconds)
                pytest.fail(f"the counter exited early: {child.stderr.read() if child.stderr else ''}")
            except subprocess.TimeoutExpired:
                pass
            child.send_signal(signal.SIGKILL)  # the power cut
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        generated = _truth(truth_file)
        stored = read_committed(journal_dir)["water"].total
        assert generated > RATE * seconds * 0.5, "the pulse train did not run"
        counted_this_run = stored - base
        lost = generated - counted_this_run
        # Never above the truth: no pulse counted twice, nothing invented.
        assert counted_this_run <= generated, (run, counted_this_run, generated)
        # At most one second of pulses lost to the cut.
        assert 0 <= lost <= RATE * 1.0, (run, lost)
        print(f"run {run}: {generated} pulses driven, {lost} lost to the cut")
        true_total += generated
        lost_total += lost
        assert stored == true_total - lost_total
        assert stored <= true_total
