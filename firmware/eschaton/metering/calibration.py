"""A pulse meter's calibration run, shared by ``eschaton meter calibrate`` (a stopped node: the
journal's totals) and the running node's ``meter.calibrate`` command (the dashboard: live
counts). The arithmetic and its checks are ``core.metering.totals.calibrate``; the measured
factor is stored in ``CalibrationStore`` and used from the node's next start."""
from __future__ import annotations

import time
from typing import Any

from eschaton.config.metering import PulseMeterConfig
from eschaton.core.metering.totals import calibrate
from eschaton.errors import LocalError
from eschaton.metering.state import CalibrationStore


def start_run(store: CalibrationStore, m: PulseMeterConfig, pulses_now: int) -> dict[str, Any]:
    store.start_run(m.name, pulses_now, time.time_ns())
    return {"meter": m.name, "unit": m.unit, "started": True, "start_pulses": pulses_now,
            "nominal_counts_per_unit": m.counts_per_unit}


def finish_run(store: CalibrationStore, m: PulseMeterConfig, pulses_now: int, quantity: float,
               tolerance: float = 0.5, pulses: int | None = None) -> dict[str, Any]:
    """End the run started by ``start_run`` (or take ``pulses`` counted elsewhere), store the
    factor and say what it is, with the TOML line that would make it the nominal value."""
    if pulses is None:
        run = store.run(m.name)
        if run is None:
            raise LocalError(f"no calibration run of {m.name!r} in progress; start one first")
        pulses = pulses_now - run["start_pulses"]
    previous = store.factors().get(m.name, m.counts_per_unit)
    factor = calibrate(pulses, quantity, nominal=m.counts_per_unit, tolerance=tolerance)
    store.save_factor(m.name, factor, pulses=pulses, quantity=quantity, wall_ns=time.time_ns())
    return {"meter": m.name, "unit": m.unit, "pulses": pulses, "quantity": quantity,
            "counts_per_unit": factor, "previous_counts_per_unit": previous,
            "applies": "from the next start of the node",
            "config_line": f"counts_per_unit = {factor:.6g}   # [[metering.meters]] name = \"{m.name}\""}
