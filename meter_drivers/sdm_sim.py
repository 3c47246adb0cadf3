"""An Eastron SDM120/SDM630 emulator: a real pymodbus RTU server on a serial port (e.g. a pty).

Used by the integration tests and for emulation without hardware::

    python -m meter_drivers.sdm_sim --port /tmp/sdm-server --model sdm120 \
        --voltage 230.5 --current 4.25 --power 979.5 --import-kwh 1234.5 --export-kwh 12.25

With ``--power-step-kwh`` the import register grows by that much on every read, so a poller sees
a meter that is consuming.
"""
from __future__ import annotations

import argparse
import asyncio
import struct
from collections.abc import Mapping

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from meter_drivers.sdm_registers import REGISTER_MAPS

REGISTER_SPACE = 0x0160  # covers every address the drivers read


def float_registers(value: float) -> list[int]:
    """A float32 as two registers, high word first (Eastron order)."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def build_registers(model: str, values: Mapping[str, float]) -> list[int]:
    regs = [0] * REGISTER_SPACE
    for field, addr in REGISTER_MAPS[model].items():
        regs[addr:addr + 2] = float_registers(values.get(field, 0.0))
    return regs


def make_device(model: str, values: dict[str, float], *, device_id: int = 1,
                step_kwh: float = 0.0) -> SimDevice:
    """A SimDevice whose input registers hold ``values``; import grows by ``step_kwh`` per read."""
    regmap = REGISTER_MAPS[model]

    async def on_access(function_code: int, start_address: int, address: int, count: int,
                        current_registers: list[int], set_values: object) -> None:
        if step_kwh and function_code == 4:
            values["import_kwh"] = values.get("import_kwh", 0.0) + step_kwh
            a = regmap["import_kwh"] - start_address
            current_registers[a:a + 2] = float_registers(values["import_kwh"])
        return None

    return SimDevice(
        id=device_id,
        simdata=[SimData(0, values=build_registers(model, values), datatype=DataType.REGISTERS)],
        action=on_access,
    )


async def serve(port: str, model: str, values: dict[str, float], *, device_id: int = 1,
                baudrate: int = 9600, step_kwh: float = 0.0) -> None:
    # Other addresses get an exception response (pymodbus 3.16's ignore_missing_devices does not
    # apply to SimDevice contexts), i.e. the emulator behaves like a meter behind a gateway.
    server = ModbusSerialServer(make_device(model, values, device_id=device_id, step_kwh=step_kwh),
                                port=port, baudrate=baudrate)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", required=True)
    p.add_argument("--model", default="sdm120", choices=sorted(REGISTER_MAPS))
    p.add_argument("--device-id", type=int, default=1)
    p.add_argument("--baudrate", type=int, default=9600)
    p.add_argument("--voltage", type=float, default=230.0)
    p.add_argument("--current", type=float, default=0.0)
    p.add_argument("--power", type=float, default=0.0)
    p.add_argument("--import-kwh", type=float, default=0.0)
    p.add_argument("--export-kwh", type=float, default=0.0)
    p.add_argument("--power-step-kwh", type=float, default=0.0)
    a = p.parse_args(argv)
    values = {"voltage_v": a.voltage, "current_a": a.current, "power_w": a.power,
              "import_kwh": a.import_kwh, "export_kwh": a.export_kwh}
    asyncio.run(serve(a.port, a.model, values, device_id=a.device_id, baudrate=a.baudrate,
                      step_kwh=a.power_step_kwh))


if __name__ == "__main__":
    main()
