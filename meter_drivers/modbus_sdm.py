"""Modbus RTU energy meter (Eastron SDM120 / SDM630 class) over RS-485, with pymodbus and pyserial.

Rules / theory of operation:
- Voltage, current, power, import and export kWh are float32 input registers (function 0x04) at
  the Eastron addresses (``sdm_registers``); they are fetched in as few requests as the meter
  allows (one for an SDM120).
- pymodbus's own retry loop is switched off (``retries=0``) so each attempt can be classified:
  no bytes at all is a ``MeterTimeoutError``; bytes without a valid frame (a CRC failure, line
  noise) is a ``MeterCrcError``; a port that cannot be opened or vanished is a ``MeterPortError``;
  an exception response or a NaN/infinite value is a ``MeterProtocolError``. After ``retries``
  further attempts the last error is raised.
- Transient failures close the port; the next attempt reopens it, so a USB adapter that comes
  back, or a meter that is powered up again, is picked up without restarting the node.
- Nothing here sleeps on the hot path except the short ``backoff_s`` between attempts (the
  half-duplex bus needs a quiet gap before the next request). Time and sleep are injectable.
"""
from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Callable

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from hw.factory import Hardware
from meter_drivers.base import (
    EnergyReading,
    MeterCrcError,
    MeterError,
    MeterPortError,
    MeterProtocolError,
    MeterTimeoutError,
)
from meter_drivers.sdm_registers import FIELDS, REGISTER_MAPS, read_spans

# pymodbus logs every failed request at ERROR to stderr (logging's last-resort handler). This
# driver re-raises each failure as a typed error, so keep its log out of the CLI's output; an
# application that configures logging still receives the records through propagation.
logging.getLogger("pymodbus.logging").addHandler(logging.NullHandler())


class ModbusEnergyMeter:
    """An SDM120/SDM630-class meter on a serial RS-485 line."""

    def __init__(self, name: str, port: str, *, model: str = "sdm120", device_id: int = 1,
                 baudrate: int = 9600, parity: str = "N", stopbits: int = 1,
                 timeout_s: float = 0.5, retries: int = 2, backoff_s: float = 0.05,
                 hw: Hardware | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if model not in REGISTER_MAPS:
            raise ValueError(f"unknown model {model!r}")
        self.name = name
        self.port = port
        self.model = model
        self.device_id = device_id
        self.retries = retries
        self.backoff_s = backoff_s
        self._regmap = REGISTER_MAPS[model]
        self._spans = read_spans(self._regmap)
        self._clock = clock
        self._wall_ns = wall_ns
        self._sleep = sleep
        self._rx = b""
        if hw is not None:
            hw.claim_uart(port, name)  # the header UART occupies GPIO14/15
        self._client = ModbusSerialClient(
            port, framer=FramerType.RTU, baudrate=baudrate, parity=parity, stopbits=stopbits,
            timeout=timeout_s, retries=0, trace_packet=self._trace)
        self.reads_ok = 0
        self.reads_failed = 0

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # pymodbus hands every received buffer here; keep it to tell silence from garbage.
        if not sending:
            self._rx = data
        return data

    def _attempt(self) -> dict[str, float]:
        if not self._client.connected and not self._client.connect():
            raise MeterPortError(self.name, f"cannot open serial port {self.port}")
        regs: dict[int, int] = {}
        for addr, count in self._spans:
            self._rx = b""
            try:
                resp = self._client.read_input_registers(addr, count=count, device_id=self.device_id)
            except ConnectionException as e:
                self._client.close()  # type: ignore[no-untyped-call]
                raise MeterPortError(self.name, f"serial port {self.port} failed "
                                     "(adapter unplugged?)") from e
            except ModbusException as e:
                self._client.close()  # type: ignore[no-untyped-call]  # drop whatever is half-received; reopen next time
                if self._rx:
                    raise MeterCrcError(
                        self.name, f"no valid frame in {len(self._rx)} bytes received "
                        f"(CRC error or line noise): {self._rx[:16].hex()}") from e
                raise MeterTimeoutError(self.name, f"no response from device {self.device_id} "
                                        f"on {self.port}") from e
            if resp.isError():
                raise MeterProtocolError(
                    self.name, f"exception response {getattr(resp, 'exception_code', '?')} for "
                    f"registers {addr:#06x}+{count}")
            if len(resp.registers) != count:
                raise MeterProtocolError(self.name, f"asked for {count} registers, got "
                                         f"{len(resp.registers)}")
            for i, r in enumerate(resp.registers):
                regs[addr + i] = r
        out: dict[str, float] = {}
        for field in FIELDS:
            a = self._regmap[field]
            value = struct.unpack(">f", struct.pack(">HH", regs[a], regs[a + 1]))[0]
            if not math.isfinite(value):
                raise MeterProtocolError(self.name, f"{field} is not a finite number")
            out[field] = value
        return out

    def read(self) -> EnergyReading:
        """Poll the meter once, with retries; raises a ``MeterError`` subclass on failure."""
        last: MeterError | None = None
        for attempt in range(1, self.retries + 2):
            try:
                values = self._attempt()
            except (MeterTimeoutError, MeterCrcError, MeterPortError) as e:
                last = e
                if attempt <= self.retries:
                    self._sleep(self.backoff_s)
                continue
            except MeterProtocolError:
                self.reads_failed += 1
                raise
            self.reads_ok += 1
            return EnergyReading(meter=self.name, at=self._clock(), wall_ns=self._wall_ns(),
                                 attempts=attempt, **values)
        self.reads_failed += 1
        assert last is not None
        raise last

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
