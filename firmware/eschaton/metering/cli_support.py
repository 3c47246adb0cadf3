"""Helpers shared by ``eschaton meter`` and ``eschaton valve``: data directory, config, status rows."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eschaton.config.defaults import CONFIG_NAME
from eschaton.config.loader import load_metering_config
from eschaton.config.metering import (
    MeteringConfig,
    ModbusMeterConfig,
    PulseMeterConfig,
    ValveConfig,
)
from eschaton.store.datadir import resolve_datadir
from meter_drivers.base import PowerLossBehaviour


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help=f"node TOML (default: <datadir>/{CONFIG_NAME})")


def datadir_of(args: argparse.Namespace) -> Path:
    return resolve_datadir(getattr(args, "datadir", None))


def config_of(args: argparse.Namespace) -> MeteringConfig:
    path = getattr(args, "config", None) or datadir_of(args) / CONFIG_NAME
    return load_metering_config(path)


def meter_row(m: PulseMeterConfig | ModbusMeterConfig) -> dict[str, Any]:
    if isinstance(m, PulseMeterConfig):
        return {"name": m.name, "type": m.type, "pin": m.pin, "unit": m.unit}
    return {"name": m.name, "type": m.type, "port": m.port, "model": m.model,
            "device_id": m.device_id, "unit": "kWh"}


POWER_LOSS = {
    "solenoid_nc": PowerLossBehaviour.FAILS_CLOSED,
    "motorised": PowerLossBehaviour.HOLDS_POSITION,
}

POWER_LOSS_TEXT = {
    PowerLossBehaviour.FAILS_CLOSED: "closes by itself on power loss; after a node crash the service's safe-state command closes it",
    PowerLossBehaviour.HOLDS_POSITION: "holds its position on power loss; after a node crash the service's safe-state command drives it closed",
}


def valve_row(v: ValveConfig) -> dict[str, Any]:
    pl = POWER_LOSS[v.type]
    row: dict[str, Any] = {"name": v.name, "type": v.type, "power_loss": pl.value,
                           "on_power_loss": POWER_LOSS_TEXT[pl]}
    if v.type == "solenoid_nc":
        row["pin"] = v.pins[0]
    else:
        row["open_pin"], row["close_pin"] = v.pins
        row["travel_s"] = v.travel_s
    row["feedback_pin"] = v.feedback_pin
    row["meter"] = v.meter
    return row
