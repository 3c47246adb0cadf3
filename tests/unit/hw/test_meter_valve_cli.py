"""``eschaton meter ...`` and ``eschaton valve ...``: output, --json, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from eschaton.cli.main import main
from eschaton.config.metering import parse_metering_config
from eschaton.metering.service import MeteringService
from hw.mock import drive_pulses, mock_hardware

CONFIG = """\
[hardware]
board = "pi4b"

[[meter]]
name = "water"
type = "pulse_flow"
pin = 17
pulses_per_litre = 450

[[meter]]
name = "grid"
type = "s0_energy"
pin = 27
impulses_per_kwh = 1000

[[valve]]
name = "main"
type = "solenoid_nc"
pin = 22
meter = "water"

[[valve]]
name = "ball"
type = "motorised"
open_pin = 23
close_pin = 24
travel_s = 0.05
feedback_pin = 25
"""


@pytest.fixture
def datadir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # No Pi here: the environment selects gpiozero's mock factory (the config does not).
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    monkeypatch.delenv("ESCHATON_DATADIR", raising=False)
    (tmp_path / "node.toml").write_text(CONFIG)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    value = json.loads(out) if "--json" in argv and rc == 0 else out
    return rc, value, err


def count(datadir: Path, water: int, grid: int = 0) -> None:
    """Run the node's metering service on the mock and commit some pulses."""
    cfg = parse_metering_config(tomllib.loads(CONFIG), source="node.toml")
    with mock_hardware("pi4b") as hw:
        svc = MeteringService(cfg, hw=hw, datadir=datadir)
        drive_pulses(hw, 17, water)
        drive_pulses(hw, 27, grid)
        svc.close()


def test_meter_list_and_read(datadir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    count(datadir, water=900, grid=1500)
    rc, rows, _ = run(capsys, "meter", "list", "--datadir", str(datadir), "--json")
    assert rc == 0
    assert [(r["name"], r["pulses"], r["unit"]) for r in rows] == [
        ("water", 900, "L"), ("grid", 1500, "kWh")]
    rc, row, _ = run(capsys, "meter", "read", "grid", "--datadir", str(datadir), "--json")
    assert rc == 0 and row["quantity"] == pytest.approx(1.5) and row["committed_at_ns"] > 0
    rc, text, _ = run(capsys, "meter", "read", "water", "--config", str(datadir / "node.toml"),
                      "--datadir", str(datadir))
    assert rc == 0 and "quantity: 2.0" in text


def test_meter_calibrate_two_step(datadir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    count(datadir, water=100)
    rc, row, _ = run(capsys, "meter", "calibrate", "water", "--start", "--datadir", str(datadir),
                     "--json")
    assert rc == 0 and row["start_pulses"] == 100
    count(datadir, water=2310)  # 5 L through a unit that gives 462 pulses per litre
    rc, row, _ = run(capsys, "meter", "calibrate", "water", "--finish", "--quantity", "5",
                     "--datadir", str(datadir), "--json")
    assert rc == 0
    assert row["pulses"] == 2310 and row["counts_per_unit"] == pytest.approx(462.0)
    assert row["previous_counts_per_unit"] == 450.0
    rc, row, _ = run(capsys, "meter", "read", "water", "--datadir", str(datadir), "--json")
    assert row["calibration"] == "measured" and row["quantity"] == pytest.approx(2410 / 462)
    # The node picks the measured factor up on its next start.
    cfg = parse_metering_config(tomllib.loads(CONFIG), source="node.toml")
    with mock_hardware("pi4b") as hw:
        svc = MeteringService(cfg, hw=hw, datadir=datadir)
        assert svc.pulse_meters["water"].counts_per_unit == pytest.approx(462.0)
        svc.close()


def test_meter_calibrate_one_step(datadir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, row, _ = run(capsys, "meter", "calibrate", "grid", "--pulses", "2080", "--quantity", "2",
                     "--datadir", str(datadir), "--json")
    assert rc == 0 and row["counts_per_unit"] == pytest.approx(1040.0) and row["unit"] == "kWh"


@pytest.mark.parametrize(("argv", "message"), [
    (("meter", "read", "gas"), "no meter named 'gas' (declared: water, grid)"),
    (("meter", "calibrate", "water", "--finish", "--quantity", "5"),
     "no calibration run of 'water' in progress"),
    (("meter", "calibrate", "water", "--pulses", "10", "--quantity", "5"),
     "away from the nominal 450"),
    (("meter", "calibrate", "water", "--start", "--quantity", "5", "--pulses", "3"), None),
    (("valve", "open", "main"), "normally-closed solenoid: it closes as soon as this command"),
    (("valve", "close", "nope"), "no valve named 'nope'"),
])
def test_errors_are_one_line(datadir: Path, capsys: pytest.CaptureFixture[str],
                             argv: tuple[str, ...], message: str | None) -> None:
    if message is None:  # argparse: mutually exclusive modes, exit 2
        with pytest.raises(SystemExit) as ei:
            main([*argv, "--datadir", str(datadir)])
        assert ei.value.code == 2
        return
    rc, _, err = run(capsys, *argv, "--datadir", str(datadir), "--json")
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("eschaton: ") and message in err


def test_config_errors_reach_the_cli_with_file_and_line(
        datadir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (datadir / "node.toml").write_text(CONFIG.replace("pin = 27", "pin = 17"))
    rc, _, err = run(capsys, "meter", "list", "--datadir", str(datadir))
    assert rc == 1
    assert err == (f"eschaton: {datadir / 'node.toml'}:13: meter[1].pin: "
                   "GPIO17 is already used by meter[0] (water)\n")
    rc, _, err = run(capsys, "meter", "list", "--datadir", str(datadir / "missing"))
    assert rc == 1 and "node.toml: file: does not exist" in err


def test_valve_commands(datadir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, rows, _ = run(capsys, "valve", "status", "--datadir", str(datadir), "--json")
    assert rc == 0
    assert [(r["name"], r["power_loss"], r["commanded_open"]) for r in rows] == [
        ("main", "fails_closed", None), ("ball", "holds_position", None)]
    assert rows[1]["sensed_open"] is False and rows[0]["sensed_open"] is None
    rc, row, _ = run(capsys, "valve", "open", "ball", "--datadir", str(datadir), "--json")
    assert rc == 0 and row["action"] == "opened" and row["commanded_open"] is True
    rc, row, _ = run(capsys, "valve", "status", "ball", "--datadir", str(datadir), "--json")
    assert row["commanded_open"] is True
    assert "holds its position" in row["on_power_loss"]
    rc, row, _ = run(capsys, "valve", "open", "main", "--for", "0.01", "--datadir", str(datadir),
                     "--json")
    assert rc == 0 and row["action"] == "opened for 0.01 s, then closed"
    assert row["commanded_open"] is False
    rc, row, _ = run(capsys, "valve", "close", "ball", "--datadir", str(datadir), "--json")
    assert rc == 0 and row["commanded_open"] is False


def test_console_script_never_shows_a_traceback(datadir: Path) -> None:
    (datadir / "node.toml").write_text(CONFIG + '\n[[meter]]\nname = "x"\ntype = "laser"\npin = 5\n')
    p = subprocess.run([sys.executable, "-m", "eschaton", "meter", "list", "--datadir",
                        str(datadir), "--json"], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "GPIOZERO_PIN_FACTORY": "mock"})
    assert p.returncode == 1, p.stderr
    assert p.stdout == ""
    assert p.stderr.strip().endswith("meter[2].type: unknown meter type 'laser'; known: "
                                     "pulse_flow, s0_energy, modbus_sdm")
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1
