"""Eastron SDM120 / SDM630 input-register maps (function 0x04, IEEE-754 float32, high word first).

Addresses are the protocol (0-based) addresses from Eastron's Modbus protocol documents, e.g.
SDM120 voltage is "30001" in the manual = address 0x0000 on the wire.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

FIELDS = ("voltage_v", "current_a", "power_w", "import_kwh", "export_kwh")

REGISTER_MAPS: Mapping[str, Mapping[str, int]] = MappingProxyType({
    "sdm120": MappingProxyType({
        "voltage_v": 0x0000,
        "current_a": 0x0006,
        "power_w": 0x000C,
        "import_kwh": 0x0048,
        "export_kwh": 0x004A,
    }),
    "sdm630": MappingProxyType({
        "voltage_v": 0x0000,  # phase 1 line-to-neutral
        "current_a": 0x0030,  # sum of line currents
        "power_w": 0x0034,  # total system power
        "import_kwh": 0x0048,
        "export_kwh": 0x004A,
    }),
})

# Eastron meters answer at most 80 registers (40 float parameters) per request.
MAX_REGISTERS_PER_READ = 80


def read_spans(regmap: Mapping[str, int]) -> list[tuple[int, int]]:
    """Group the float registers of a map into as few (address, count) requests as allowed."""
    addrs = sorted(set(regmap.values()))
    spans: list[tuple[int, int]] = []
    start = addrs[0]
    end = start + 2
    for a in addrs[1:]:
        if a + 2 - start <= MAX_REGISTERS_PER_READ:
            end = a + 2
        else:
            spans.append((start, end - start))
            start, end = a, a + 2
    spans.append((start, end - start))
    return spans
