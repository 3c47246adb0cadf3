"""Meter benchmarks on gpiozero's MockFactory. Prints its figures; ratios are within this run.

1. Highest pulse rate counted without loss: the metering service (polling thread, journal with
   fsync) counts a real-time pulse train at rising rates; a rate passes when every driven pulse
   was counted and the generator kept its schedule (>= 98 % of the target rate). On the mock the
   edge callback runs in the driving thread, so the ceiling is the cost of drive + dispatch +
   count, not interrupt latency as on a Pi.
2. CPU time per pulse through ``PulseFlowMeter`` against a bare loop of ``drive_low/drive_high``
   on a raw MockPin with a trivial counter callback.
3. Journal writes per hour at a steady 225 Hz (a YF-S201 at full flow), real time, fsync on.
"""
from __future__ import annotations

import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "firmware")]

from eschaton.config.metering import parse_metering_config  # noqa: E402
from eschaton.metering.service import MeteringService  # noqa: E402
from hw.mock import PulseTrain, mock_hardware  # noqa: E402
from meter_drivers.pulse_flow import PulseFlowMeter  # noqa: E402

CONFIG = """
[hardware]
backend = "mock"
[metering]
commit_interval_s = 1.0
[[meter]]
name = "water"
type = "pulse_flow"
pin = 17
max_rate_hz = 1000000
"""


def _service(datadir: str) -> tuple[MeteringService, object]:
    cfg = parse_metering_config(tomllib.loads(CONFIG), source="bench")
    hw = mock_hardware()
    return MeteringService(cfg, hw=hw, datadir=datadir), hw


def lossless_rate(seconds: float = 1.5) -> tuple[float, list[str]]:
    best = 0.0
    lines = []
    for target in (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 300_000,
                   500_000):
        with tempfile.TemporaryDirectory() as d:
            svc, hw = _service(d)
            svc.start(poll_interval_s=0.05)
            train = PulseTrain(hw, 17, target).start()  # type: ignore[arg-type]
            time.sleep(seconds)
            driven = train.stop()
            elapsed = (train.stopped_at or 0) - (train.started_at or 0)
            counted = svc.pulse_meters["water"].count
            svc.close()
            hw.close()  # type: ignore[attr-defined]
        achieved = driven / elapsed if elapsed > 0 else 0.0
        ok = counted == driven and achieved >= 0.98 * target
        lines.append(f"  target {target:>7} Hz: driven {driven:>8}, counted {counted:>8}, "
                     f"achieved {achieved:>9.0f} Hz  {'ok' if ok else 'FELL BEHIND or LOST'}")
        if not ok:
            break
        best = target
    return best, lines


def cpu_per_pulse(n: int = 200_000) -> tuple[float, float]:
    # Baseline: raw MockPin, trivial counter held strongly (gpiozero keeps a weak reference).
    with mock_hardware() as hw:
        pin = hw.pin_factory.pin(18)
        pin.function = "input"
        pin.pull = "up"
        count = [0]

        def cb(ticks: object, state: bool) -> None:
            count[0] += 1

        pin.edges = "falling"
        pin.when_changed = cb
        low, high = pin.drive_low, pin.drive_high
        t0 = time.process_time()
        for _ in range(n):
            low()
            high()
        bare = (time.process_time() - t0) / n
        assert count[0] == n

        meter = PulseFlowMeter("water", 17, hw=hw, counts_per_unit=450.0)
        p = hw.mock_pin(17)
        low, high = p.drive_low, p.drive_high
        t0 = time.process_time()
        for _ in range(n):
            low()
            high()
        ours = (time.process_time() - t0) / n
        assert meter.total == n
    return bare, ours


def journal_writes(seconds: float = 8.0) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as d:
        svc, hw = _service(d)
        svc.start(poll_interval_s=0.05)
        train = PulseTrain(hw, 17, 225.0).start()  # type: ignore[arg-type]
        time.sleep(seconds)
        train.stop()
        assert svc.journal is not None
        st = svc.journal.stats()
        svc.close()
        hw.close()  # type: ignore[attr-defined]
    return st.commits_per_hour, st.bytes_written * 3600.0 / st.elapsed_s, st.commits


def main() -> None:
    best, lines = lossless_rate()
    print("pulse counting on the mock (service + journal running):")
    print("\n".join(lines))
    print(f"highest pulse rate counted without loss: {best:.0f} Hz")
    bare, ours = cpu_per_pulse()
    print(f"CPU per pulse: bare drive_low/drive_high + trivial counter {bare * 1e6:.2f} us, "
          f"PulseFlowMeter {ours * 1e6:.2f} us, ratio {ours / bare:.2f}x")
    per_hour, bytes_per_hour, commits = journal_writes()
    print(f"journal at a steady 225 Hz: {commits} commits in 8 s -> {per_hour:.0f} write+fsync "
          f"per hour ({bytes_per_hour / 1024:.0f} KiB/h appended; bound 3600/h at 1 s interval)")


if __name__ == "__main__":
    main()
