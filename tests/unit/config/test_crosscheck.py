"""Checks across sections happen when the file is read, and name the file, key and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from eschaton.config import ConfigError, parse_config
from tests.unit.net.helpers import keys

PEER = keys("bob").node_id.hex()
HEAD = '[node]\ndatadir = "/tmp/x"\n[hardware]\nboard = "pi4b"\n'


def _meter(port: Path) -> str:
    return f'[[meter]]\nname = "house"\ntype = "modbus_sdm"\nport = "{port}"\n'


@pytest.mark.parametrize("network", [
    '[network]\nlisten = ["tcp://0.0.0.0:0", "serial://{port}?baud=115200"]\n',
    '[network]\n[[network.peers]]\nid = "' + PEER + '"\nurl = "serial://{port}"\n',
])
def test_a_serial_device_is_a_link_or_a_meter_not_both(tmp_path: Path, network: str) -> None:
    port = tmp_path / "ttyUSB0"
    port.write_text("")
    text = HEAD + network.format(port=port) + _meter(port)
    with pytest.raises(ConfigError) as e:
        parse_config(text, "node.toml")
    assert e.value.key == "meter[0].port" and "is already the link transport of network." in str(e.value)
    assert e.value.line is not None and text.splitlines()[e.value.line - 1].startswith("port =")
    # Another device for the meter is fine.
    other = tmp_path / "ttyUSB1"
    other.write_text("")
    cfg = parse_config(HEAD + network.format(port=port) + _meter(other), "node.toml")
    assert cfg.metering is not None and cfg.metering.meters[0].name == "house"
