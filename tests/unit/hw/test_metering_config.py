"""Validation of the metering sections: every error names the file, the key and the line."""
from __future__ import annotations

from pathlib import Path

import pytest

from eschaton.config import ConfigError, load_metering_config
from eschaton.config.metering import ModbusMeterConfig, PulseMeterConfig
from eschaton.errors import LocalError

GOOD = """\
[hardware]
backend = "mock"
board = "pi5"

[[meter]]
name = "water"
type = "pulse_flow"
pin = "GPIO17"
pulses_per_litre = 462

[[meter]]
name = "house"
type = "modbus_sdm"
model = "sdm630"
port = "{port}"
device_id = 3

[[valve]]
name = "main"
type = "solenoid_nc"
pin = 22
meter = "water"

[[valve]]
name = "ball"
type = "motorised"
open_pin = 23
close_pin = "BOARD18"
feedback_pin = 25
travel_s = 12

[[tamper]]
name = "lid"
pin = 5
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(text)
    return p


def test_a_good_config(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB0"
    port.write_text("")
    cfg = load_metering_config(_write(tmp_path, GOOD.format(port=port)), env={})
    water, house = cfg.meters
    assert isinstance(water, PulseMeterConfig) and water.pin == 17 and water.counts_per_unit == 462.0
    assert water.unit == "L"
    assert isinstance(house, ModbusMeterConfig) and house.model == "sdm630" and house.device_id == 3
    assert cfg.valve("ball").pins == (23, 24)
    assert cfg.board.name == "pi5"
    assert cfg.tampers[0].pin == 5
    with pytest.raises(LocalError, match="no valve named 'nope'"):
        cfg.valve("nope")


def _err(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_metering_config(p, env=env or {})
    assert str(ei.value).startswith(str(p))
    return ei.value


PULSE = '[[meter]]\nname = "{name}"\ntype = "pulse_flow"\npin = {pin}\n'


def test_pin_used_twice(tmp_path: Path) -> None:
    e = _err(tmp_path, PULSE.format(name="a", pin=17) + "\n" + PULSE.format(name="b", pin='"BOARD11"'))
    assert e.key == "meter[1].pin" and e.line == 9
    assert "GPIO17 is already used by meter[0] (a)" in str(e)


def test_valve_feedback_pin_clashing_with_a_meter(tmp_path: Path) -> None:
    text = PULSE.format(name="a", pin=17) + (
        '\n[[valve]]\nname = "v"\ntype = "solenoid_nc"\npin = 22\nfeedback_pin = 17\n')
    e = _err(tmp_path, text)
    assert e.key == "valve[0].feedback_pin" and e.line == 10


def test_unknown_type(tmp_path: Path) -> None:
    e = _err(tmp_path, '[[meter]]\nname = "gas"\ntype = "diaphragm"\npin = 4\n')
    assert e.key == "meter[0].type" and e.line == 3
    assert "unknown meter type 'diaphragm'; known: pulse_flow, s0_energy, modbus_sdm" in str(e)
    e = _err(tmp_path, '[[valve]]\nname = "v"\ntype = "butterfly"\npin = 4\n')
    assert e.key == "valve[0].type"


@pytest.mark.parametrize(("pin", "message"), [
    (40, "GPIO40 is not on the Raspberry Pi 5 header"),
    (1, "reserved: ID_SC"),
    ('"BOARD2"', "physical pin 2 on the Raspberry Pi 5 is not a GPIO"),
])
def test_pin_not_on_this_board(tmp_path: Path, pin: str, message: str) -> None:
    e = _err(tmp_path, '[hardware]\nboard = "pi5"\n\n' + PULSE.format(name="a", pin=pin))
    assert e.key == "meter[0].pin" and e.line == 7
    assert message in str(e)


def test_board_comes_from_the_mock_revision_when_not_configured(tmp_path: Path) -> None:
    e = _err(tmp_path, PULSE.format(name="a", pin=99), env={"GPIOZERO_MOCK_REVISION": "902120"})
    assert "Raspberry Pi Zero 2 W" in str(e)


def test_serial_port_that_does_not_exist(tmp_path: Path) -> None:
    e = _err(tmp_path, '[[meter]]\nname = "sdm"\ntype = "modbus_sdm"\nport = "/dev/ttyUSB97"\n')
    assert e.key == "meter[0].port" and e.line == 4
    assert "serial port /dev/ttyUSB97 does not exist" in str(e)


def test_header_uart_conflicts_with_a_pulse_pin(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # /dev/serial0 exists only on a Pi; pretend it does, the rest is the real check.
    monkeypatch.setattr("eschaton.config.metering._port_exists", lambda port: True)
    text = (PULSE.format(name="a", pin=14)
            + '\n[[meter]]\nname = "sdm"\ntype = "modbus_sdm"\nport = "/dev/serial0"\n')
    e = _err(tmp_path, text)
    assert e.key == "meter[1].port" and e.line == 9
    assert "header UART on GPIO14/15, but GPIO14 is already used by meter[0] (a)" in str(e)
    # ...and the other way round: the UART first, then a pulse meter on its pin.
    text = ('[[meter]]\nname = "sdm"\ntype = "modbus_sdm"\nport = "/dev/serial0"\n\n'
            + PULSE.format(name="a", pin=15))
    e = _err(tmp_path, text)
    assert e.key == "meter[1].pin" and "GPIO15 is already used by meter[0] (sdm, serial port)" in str(e)


def test_unknown_key_and_bad_types(tmp_path: Path) -> None:
    e = _err(tmp_path, PULSE.format(name="a", pin=17) + "pulses_per_litter = 450\n")
    assert e.key == "meter[0].pulses_per_litter" and e.line == 5 and "unknown key" in str(e)
    e = _err(tmp_path, PULSE.format(name="a", pin=17) + "pulses_per_litre = -3\n")
    assert "must be positive" in str(e)
    e = _err(tmp_path, PULSE.format(name="a", pin=17) + "pull_up = 1\n")
    assert "must be true or false" in str(e)
    e = _err(tmp_path, PULSE.format(name="a", pin="true"))
    assert "must be an integer or a string, not a boolean" in str(e)


def test_names_and_links(tmp_path: Path) -> None:
    e = _err(tmp_path, PULSE.format(name="a", pin=17) + "\n" + PULSE.format(name="a", pin=18))
    assert e.key == "meter[1].name" and "already the name of meter[0]" in str(e)
    e = _err(tmp_path, PULSE.format(name="has space", pin=17))
    assert e.key == "meter[0].name"
    e = _err(tmp_path, '[[valve]]\nname = "v"\ntype = "solenoid_nc"\npin = 22\nmeter = "ghost"\n')
    assert e.key == "valve[0].meter" and "no meter named 'ghost'" in str(e)
    e = _err(tmp_path, '[[meter]]\nname = "a"\ntype = "pulse_flow"\n')
    assert e.key == "meter[0].pin" and "is required" in str(e)


def test_hardware_section(tmp_path: Path) -> None:
    e = _err(tmp_path, '[hardware]\nbackend = "rpigpio"\n')
    assert e.key == "hardware.backend" and e.line == 2
    e = _err(tmp_path, '[hardware]\nboard = "pi1"\n')
    assert e.key == "hardware.board" and "supported" in str(e)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    e = _err(tmp_path, '[[meter]]\nname = "a\n')
    assert e.key == "toml" and e.line == 2
    with pytest.raises(ConfigError, match="does not exist"):
        load_metering_config(tmp_path / "nope.toml")


def test_the_node_loader_calls_this_module(tmp_path: Path) -> None:
    """The node's full config loader hands [[meter]]/[[valve]] to parse_metering."""
    loader = pytest.importorskip("eschaton.config.loader")
    p = _write(tmp_path, '[node]\nname = "n1"\n\n' + PULSE.format(name="a", pin=17)
               + "\n" + PULSE.format(name="b", pin=17))
    with pytest.raises(LocalError) as ei:
        loader.load_config(p)
    assert "meter[1].pin" in str(ei.value) and f"{p}:" in str(ei.value)


def test_relay_section(tmp_path: Path) -> None:
    e = _err(tmp_path, '[[relay]]\nname = "socket"\npin = 26\ncontact = "maybe"\n')
    assert e.key == "relay[0].contact" and e.line == 4
    e = _err(tmp_path, PULSE.format(name="a", pin=26) + '\n[[relay]]\nname = "s"\npin = 26\n')
    assert e.key == "relay[0].pin" and "GPIO26 is already used by meter[0] (a)" in str(e)
