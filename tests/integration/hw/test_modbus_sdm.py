"""The Modbus SDM driver against a real pymodbus RTU server on socat ptys, through a faulty line."""
from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from eschaton.cli.main import main
from eschaton.config.metering import parse_metering_config
from eschaton.core.metering.safety import AlarmCleared, AlarmKind, MeterFaulty, SafetyEvent
from eschaton.metering.service import MeteringService
from hw.mock import mock_hardware
from meter_drivers.base import (
    MeterCrcError,
    MeterError,
    MeterPortError,
    MeterProtocolError,
    MeterTimeoutError,
)
from meter_drivers.modbus_sdm import ModbusEnergyMeter
from tests.conftest import need_tool
from tests.integration.hw.rs485 import Emulator, FaultyLine, PtyPair, wait_for

pytestmark = [pytest.mark.pty, pytest.mark.timeout(120)]

VALUES = {"voltage": 230.5, "current": 4.25, "power": 979.5, "import_kwh": 1234.5,
          "export_kwh": 12.25}  # all exact in float32


class Rig:
    def __init__(self, tmp: Path, model: str = "sdm120", proxy: bool = True,
                 **values: float) -> None:
        socat = need_tool("socat")
        self.client = tmp / "client"
        self.server_port = tmp / "server"
        self.pairs: list[PtyPair] = []
        self.line: FaultyLine | None = None
        if proxy:
            self.pairs.append(PtyPair(socat, self.client, tmp / "proxy_a").start())
            self.pairs.append(PtyPair(socat, tmp / "proxy_b", self.server_port).start())
            self.line = FaultyLine(tmp / "proxy_a", tmp / "proxy_b")
        else:
            self.pairs.append(PtyPair(socat, self.client, self.server_port).start())
        self.emulator = Emulator(self.server_port, model, **{**VALUES, **values}).start()

    def meter(self, **kw: object) -> ModbusEnergyMeter:
        opts: dict[str, object] = {"timeout_s": 0.3, "retries": 1, "backoff_s": 0.01}
        opts.update(kw)
        return ModbusEnergyMeter("house", str(self.client), **opts)  # type: ignore[arg-type]

    def wait_ready(self, meter: ModbusEnergyMeter) -> None:
        def ok() -> bool:
            try:
                meter.read()
                return True
            except MeterError:
                return False
        wait_for(ok, 30, "the emulator to answer")

    def close(self) -> None:
        self.emulator.kill()
        if self.line is not None:
            self.line.close()
        for p in self.pairs:
            p.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _check(reading: object) -> None:
    assert reading.voltage_v == 230.5  # type: ignore[attr-defined]
    assert reading.current_a == 4.25  # type: ignore[attr-defined]
    assert reading.power_w == 979.5  # type: ignore[attr-defined]
    assert reading.import_kwh == 1234.5  # type: ignore[attr-defined]
    assert reading.export_kwh == 12.25  # type: ignore[attr-defined]


def test_reads_an_sdm120(rig: Rig) -> None:
    m = rig.meter()
    rig.wait_ready(m)
    r = m.read()
    _check(r)
    assert r.attempts == 1 and r.wall_ns > 0
    m.close()


def test_reads_an_sdm630_register_map(tmp_path: Path) -> None:
    r = Rig(tmp_path, model="sdm630", proxy=False)
    try:
        m = r.meter(model="sdm630")
        r.wait_ready(m)
        _check(m.read())
        m.close()
    finally:
        r.close()


def test_exception_responses_and_impossible_values_are_protocol_errors(tmp_path: Path) -> None:
    r = Rig(tmp_path, proxy=False, voltage=float("nan"))
    try:
        probe = r.meter(retries=0)

        def answers() -> bool:
            try:
                probe.read()
            except MeterProtocolError:
                return True  # up, and answering device 1 with a NaN voltage
            except MeterError:
                return False
            return True
        wait_for(answers, 30, "the emulator")
        with pytest.raises(MeterProtocolError, match="voltage_v is not a finite number"):
            probe.read()
        probe.close()
        other = r.meter(device_id=7, retries=2)
        with pytest.raises(MeterProtocolError, match="exception response 4 for registers"):
            other.read()  # refused, not retried: asking again gets the same answer
        assert other.reads_failed == 1
        other.close()
    finally:
        r.close()


def test_crc_errors_are_typed_retried_and_recovered(rig: Rig) -> None:
    assert rig.line is not None
    m = rig.meter()
    rig.wait_ready(m)
    failed_before = m.reads_failed
    rig.line.fault("crc", 1)  # one damaged answer: the retry gets a good one
    r = m.read()
    _check(r)
    assert r.attempts == 2 and rig.line.damaged == 1
    rig.line.fault("crc")  # every answer damaged
    with pytest.raises(MeterCrcError, match="no valid frame in .* bytes received"):
        m.read()
    rig.line.heal()
    _check(m.read())
    assert m.reads_failed == failed_before + 1
    m.close()


def test_garbage_and_noise_are_crc_errors(rig: Rig) -> None:
    assert rig.line is not None
    m = rig.meter()
    rig.wait_ready(m)
    for mode in ("garbage", "noise"):
        rig.line.fault(mode)
        with pytest.raises(MeterCrcError):
            m.read()
        rig.line.heal()
        _check(m.read())
    m.close()


def test_dropped_answers_are_timeouts(rig: Rig) -> None:
    assert rig.line is not None
    m = rig.meter()
    rig.wait_ready(m)
    rig.line.fault("drop")
    with pytest.raises(MeterTimeoutError, match="no response from device 1"):
        m.read()
    rig.line.heal()
    _check(m.read())
    m.close()


def test_server_vanishing_and_returning(rig: Rig, tmp_path: Path) -> None:
    """The meter process dies (power cut at the meter), the service reports it, then recovers."""
    text = f"""
[hardware]
backend = "mock"
[[meter]]
name = "house"
type = "modbus_sdm"
port = "{rig.client}"
timeout_s = 0.3
retries = 0
fault_after = 2
"""
    cfg = parse_metering_config(tomllib.loads(text), source="node.toml")
    events: list[SafetyEvent] = []
    with mock_hardware() as hw:
        svc = MeteringService(cfg, hw=hw, datadir=tmp_path)
        svc.add_listener(events.append)
        rig.wait_ready(svc.modbus_meters["house"])
        assert svc.poll_modbus("house") is not None
        rig.emulator.kill()
        assert svc.poll_modbus("house") is None
        assert isinstance(svc.last_error["house"], MeterTimeoutError)
        assert svc.poll_modbus("house") is None
        assert [type(e) for e in events] == [MeterFaulty]
        rig.emulator.start()
        wait_for(lambda: svc.poll_modbus("house") is not None, 30, "recovery")
        assert events[-1] == AlarmCleared(AlarmKind.METER_FAULT, "house", events[-1].at)
        _check(svc.last_energy["house"])
        svc.close()


def test_serial_port_vanishing_and_returning(tmp_path: Path) -> None:
    """The USB-RS485 adapter is unplugged (the pty disappears) and plugged back in."""
    r = Rig(tmp_path, proxy=False)
    try:
        m = r.meter(retries=0)
        r.wait_ready(m)
        r.emulator.kill()
        r.pairs[0].stop()
        with pytest.raises(MeterPortError, match="serial port .* failed"):
            m.read()  # the open port dies under the driver
        with pytest.raises(MeterPortError, match="cannot open serial port"):
            m.read()  # and it is not there to reopen
        r.pairs[0].start()
        r.emulator.start()
        r.wait_ready(m)
        _check(m.read())
        m.close()
    finally:
        r.close()


def test_cli_reads_the_meter_and_reports_failure_in_one_line(
        rig: Rig, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "node.toml").write_text(f"""
[hardware]
backend = "mock"
[[meter]]
name = "house"
type = "modbus_sdm"
port = "{rig.client}"
timeout_s = 0.3
retries = 0
""")
    probe = rig.meter()
    rig.wait_ready(probe)
    # While another process or driver holds the port (pyserial locks it), the CLI says so.
    assert main(["meter", "read", "house", "--datadir", str(tmp_path)]) == 1
    assert "cannot open serial port" in capsys.readouterr().err
    probe.close()
    assert main(["meter", "read", "house", "--datadir", str(tmp_path), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["voltage_v"], row["import_kwh"], row["export_kwh"]) == (230.5, 1234.5, 12.25)
    rig.emulator.kill()
    assert main(["meter", "read", "house", "--datadir", str(tmp_path), "--json"]) == 1
    err = capsys.readouterr().err
    assert err == f"eschaton: meter 'house': no response from device 1 on {rig.client}\n"
