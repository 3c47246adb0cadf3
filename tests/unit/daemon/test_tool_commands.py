"""The installer's tool commands (``pin.read``, ``pin.toggle``, ``meter.calibrate``,
``config.check``) on a real metering service over the gpiozero MockFactory: the same commands the
API and the dashboard's /tools page run."""
from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from eschaton.api.registry import ApiError
from eschaton.config.metering import parse_metering_config
from eschaton.daemon import commands, meter_commands
from eschaton.dashboard import views
from eschaton.errors import EschatonError
from eschaton.metering.service import MeteringService
from hw.mock import FakeClock, drive_pulses, mock_hardware

CONFIG = """
[hardware]
backend = "mock"

[metering]
commit_interval_s = 1.0

[[meter]]
name = "water"
type = "pulse_flow"
pin = 17
pulses_per_litre = 450

[[valve]]
name = "main"
type = "solenoid_nc"
pin = 22
meter = "water"
settle_s = 2
"""


def _run(command: str, node: Any, /, **args: Any) -> Any:
    table = commands.NODE if command.startswith("config.") else meter_commands.METERING
    cmd = table[command]
    return asyncio.run(cmd.fn(node, **cmd.validate(args)))


@pytest.fixture
def node(tmp_path: Path) -> Any:
    clock = FakeClock()
    with mock_hardware("pi5") as hw:
        cfg = parse_metering_config(tomllib.loads(CONFIG), source="node.toml", text=CONFIG)
        svc = MeteringService(cfg, hw=hw, datadir=tmp_path, clock=clock, sleep=clock.advance)
        try:
            yield SimpleNamespace(metering=svc, hw=hw, clock=clock)
        finally:
            svc.close()


def test_pin_read_names_the_holder_and_follows_the_pin(node: Any) -> None:
    assert _run("pin.read", node, pin="17") == {"gpio": 17, "high": True, "owner": "water"}  # pulled up
    node.hw.mock_pin(17).drive_low()
    assert _run("pin.read", node, pin="GPIO17")["high"] is False
    assert _run("pin.read", node, pin="6") == {"gpio": 6, "high": False, "owner": None}


def test_pin_toggle_drives_a_free_pin_and_refuses_a_held_one(node: Any) -> None:
    assert _run("pin.toggle", node, pin="6") == {"gpio": 6, "high": True, "owner": "pin test"}
    assert node.hw.mock_pin(6).state is True
    assert _run("pin.toggle", node, pin="6")["high"] is False and node.hw.mock_pin(6).state is False
    assert _run("pin.read", node, pin="6")["owner"] == "pin test"
    before = node.hw.mock_pin(22).state
    with pytest.raises(ApiError, match="GPIO22 is used by 'main'"):
        _run("pin.toggle", node, pin="22")
    assert node.hw.mock_pin(22).state == before  # the valve's relay was not touched
    with pytest.raises(ApiError, match="GPIO"):
        _run("pin.toggle", node, pin="99")  # not on the board


def test_a_calibration_run_counts_the_pulses_and_stores_the_factor(node: Any, tmp_path: Path) -> None:
    assert _run("meter.calibrate", node, name="water", step="status")["running"] is False
    drive_pulses(node.hw, 17, 100, hz=100, clock=node.clock)  # before the run: not counted
    start = _run("meter.calibrate", node, name="water", step="start")
    assert start["start_pulses"] == 100
    drive_pulses(node.hw, 17, 4_600, hz=200, clock=node.clock)
    st = _run("meter.calibrate", node, name="water", step="status")
    assert st["running"] and st["pulses_now"] - st["start_pulses"] == 4_600
    done = _run("meter.calibrate", node, name="water", step="finish", quantity=10.0)
    assert done["pulses"] == 4_600 and done["counts_per_unit"] == pytest.approx(460.0)
    assert done["config_line"].startswith("counts_per_unit = 460")
    assert "460" in (node.metering.state_dir / "calibration.json").read_text()
    with pytest.raises(EschatonError, match="no calibration run"):
        _run("meter.calibrate", node, name="water", step="finish", quantity=10.0)
    with pytest.raises(ApiError, match="step must be"):
        _run("meter.calibrate", node, name="water", step="go")


def test_config_check_of_a_file_and_of_pasted_text(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text(f'[node]\ndatadir = "{tmp_path}"\n')
    node = SimpleNamespace(config=SimpleNamespace(source=str(f)))
    assert _run("config.check", node)["ok"] is True
    f.write_text(f'[node]\ndatadir = "{tmp_path}"\n[chain]\nblock_after_tx_s = "soon"\n')
    bad = _run("config.check", node)
    assert bad["ok"] is False and (bad["file"], bad["line"], bad["key"]) == (str(f), 4, "chain.block_after_tx_s")
    assert bad["error"].startswith(f"{f}:4: chain.block_after_tx_s: ") and "\n" not in bad["error"]
    pasted = _run("config.check", node, text="[node]\nname = 3\n")
    assert pasted["ok"] is False and pasted["error"].startswith("pasted:2: node.name")


def test_the_tools_page_draws_from_these_commands(node: Any) -> None:
    async def run(command: str, /, **args: Any) -> Any:
        if command == "node.health":
            return [{"service": "metering", "state": "ok", "detail": ""}]
        return await _run_async(command, node, **args)

    _run("meter.calibrate", node, name="water", step="start")
    drive_pulses(node.hw, 17, 30, hz=100, clock=node.clock)
    page = asyncio.run(views.tools_view(run, "csrf", {"config file": "node.toml"}))
    # The dashboard's own runner takes the command name positionally: ``name=`` is a parameter.
    from eschaton.dashboard.app import Dashboard

    dash = SimpleNamespace(node=node, commands={**meter_commands.METERING, **commands.NODE})
    assert asyncio.run(Dashboard.run(dash, "meter.calibrate", name="water", step="status"))["running"]  # type: ignore[arg-type]
    for part in ('class="act pin-read"', 'class="act pin-toggle"', 'data-confirm=', 'id="cal-water"',
                 'data-cal-since="water" data-start="0">30<', 'class="check-text"'):
        assert part in page, part


def _run_async(command: str, node: Any, /, **args: Any) -> Any:
    table = commands.NODE if command.startswith("config.") else meter_commands.METERING
    cmd = table[command]
    return cmd.fn(node, **cmd.validate(args))
