"""The microgrid's metering facade pushes readings to its listeners after the meters' own polls:
nobody polls the facade, a push comes at most once per ``reading_interval_s``, and none comes
after ``stop()``. Real metering service on gpiozero's mock pins; the polls run in a thread, as
the metering service's own polling thread does."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from eschaton.config import parse_config
from eschaton.daemon.mg_supply import Readings, Supply
from eschaton.metering.service import MeteringService
from hw.mock import drive_pulses, mock_hardware

PEER = "ab" * 32


def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return parse_config(f"""
[node]
datadir = "{tmp_path}"
[hardware]
board = "pi4b"
[[meter]]
name = "water"
type = "pulse_flow"
pin = 17
pulses_per_litre = 450
[[valve]]
name = "main"
type = "solenoid_nc"
pin = 22
[microgrid]
reading_interval_s = 5
[[microgrid.sell]]
meter = "water"
valve = "main"
buyer = "{PEER}"
service = "water"
unit = "litre"
base_unit = "mL"
price_msat = 2000
credit_limit_sat = 100
""", "node.toml")


async def _turns(got: list[Readings], n: int) -> None:
    """Let the loop run the hops from the polling thread (bounded: no waiting on time)."""
    for _ in range(200):
        if len(got) >= n:
            return
        await asyncio.sleep(0)


def test_readings_are_pushed_after_polls_at_most_once_per_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    cfg = config(tmp_path)
    assert cfg.metering is not None and cfg.microgrid is not None
    mono = [100.0]
    got: list[Readings] = []

    async def on_readings(r: Readings) -> None:
        got.append(r)

    async def main(meters: MeteringService, hw: object) -> None:
        node = SimpleNamespace(metering=meters, bandwidth=None, config=cfg)
        supply = Supply(node, cfg.microgrid, clock=lambda: 42_000, monotonic=lambda: mono[0])
        supply.reading_listeners.append(on_readings)
        supply.start()
        await _turns(got, 1)
        assert got == []  # nothing polled yet: nothing pushed (no ticker of its own)

        drive_pulses(hw, 17, 900)  # 2 litres
        await asyncio.to_thread(meters.poll, 1000.0)
        await _turns(got, 1)
        assert [(r.at_ms, dict(r.units)) for r in got] == [(42_000, {("water", "mL"): 2000})]

        drive_pulses(hw, 17, 450)  # one more litre, polled within the interval: not pushed yet
        await asyncio.to_thread(meters.poll, 2000.0)
        await _turns(got, 2)
        assert len(got) == 1

        mono[0] += cfg.microgrid.reading_interval_s
        await asyncio.to_thread(meters.poll, 3000.0)
        await _turns(got, 2)
        assert [r.get("water", "mL") for r in got] == [2000, 3000]

        await supply.stop()
        mono[0] += cfg.microgrid.reading_interval_s
        drive_pulses(hw, 17, 450)
        await asyncio.to_thread(meters.poll, 4000.0)
        await _turns(got, 3)
        assert len(got) == 2  # stopped: the meter's polls no longer reach the microgrid

    with mock_hardware("pi4b") as hw:
        meters = MeteringService(cfg.metering, hw=hw, datadir=tmp_path)
        try:
            asyncio.run(main(meters, hw))
        finally:
            meters.close()
