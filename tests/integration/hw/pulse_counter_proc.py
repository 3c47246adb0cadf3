"""Child process for the power-cut test: the metering service counting a 1 kHz mock pulse train.

Usage: pulse_counter_proc.py DATADIR RATE_HZ COMMIT_INTERVAL_S TRUTH_FILE

Before each pulse is driven, its number is stored in TRUTH_FILE (a shared memory map, so the
value survives SIGKILL exactly). Prints "ready <base>" once counting starts, where base is the
total the journal resumed from. Runs until killed.
"""
from __future__ import annotations

import mmap
import os
import struct
import sys
import threading
import tomllib

from eschaton.config.metering import parse_metering_config
from eschaton.metering.service import MeteringService
from hw.mock import PulseTrain, mock_hardware

CONFIG = """
[hardware]
backend = "mock"
[metering]
commit_interval_s = {interval}
[[meter]]
name = "water"
type = "pulse_flow"
pin = 17
max_rate_hz = 5000
"""


def main() -> None:
    datadir, rate, interval, truth_path = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    fd = os.open(truth_path, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, 8)
    truth = mmap.mmap(fd, 8)
    struct.pack_into("<q", truth, 0, 0)

    def before_pulse(n: int) -> None:
        struct.pack_into("<q", truth, 0, n)

    cfg = parse_metering_config(tomllib.loads(CONFIG.format(interval=interval)), source="child")
    hw = mock_hardware()
    svc = MeteringService(cfg, hw=hw, datadir=datadir)
    base = svc.pulse_meters["water"].base
    svc.start(poll_interval_s=0.05)
    PulseTrain(hw, 17, rate, before_pulse=before_pulse).start()
    print(f"ready {base}", flush=True)
    threading.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    main()
