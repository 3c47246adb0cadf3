"""Board profiles: which GPIOs each supported Raspberry Pi exposes, as data.

Rules:
- Pins are named by BCM GPIO number everywhere inside Eschaton. ``parse_pin`` accepts the usual
  spellings (``17``, ``"17"``, ``"GPIO17"``, ``"BCM17"``, ``"BOARD11"``, ``"J8:11"``) and returns
  the BCM number, or raises ``PinNotOnBoardError``.
- GPIO0/1 (the HAT ID EEPROM bus) are on the header but never usable by devices.
- GPIO14/15 carry the primary UART; a Modbus meter on the header UART claims them, so a pulse
  meter wired there is reported as a conflict instead of silently fighting the serial port.
- The four supported boards share the 40-pin header layout; they differ in revision codes, the
  SoC and the UART device names. Keeping each as a separate profile keeps that explicit.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from hw.errors import PinNotOnBoardError, UnknownBoardError

# The 40-pin J8 header, BCM number -> physical pin number. Identical on Pi 3B, 4B, 5 and Zero 2 W.
_J8_40: Mapping[int, int] = MappingProxyType({
    2: 3, 3: 5, 4: 7, 17: 11, 27: 13, 22: 15, 10: 19, 9: 21, 11: 23, 0: 27, 5: 29, 6: 31,
    13: 33, 19: 35, 26: 37, 14: 8, 15: 10, 18: 12, 23: 16, 24: 18, 25: 22, 8: 24, 7: 26,
    1: 28, 12: 32, 16: 36, 20: 38, 21: 40,
})

_RESERVED: Mapping[int, str] = MappingProxyType({
    0: "ID_SD (HAT EEPROM bus)",
    1: "ID_SC (HAT EEPROM bus)",
})

_NOTES: Mapping[int, str] = MappingProxyType({
    2: "I2C SDA, fixed 1.8 kOhm pull-up",
    3: "I2C SCL, fixed 1.8 kOhm pull-up",
    14: "UART TXD",
    15: "UART RXD",
})


@dataclass(frozen=True, slots=True)
class BoardProfile:
    """One supported board."""

    name: str
    """Short name used in configuration (``pi3b``, ``pi4b``, ``pi5``, ``zero2w``)."""
    model: str
    """Human-readable model name."""
    type_code: int
    """The board type field of the revision code (bits 4..11)."""
    mock_revision: str
    """Revision code handed to gpiozero's MockFactory to emulate this board."""
    header: Mapping[int, int]
    """BCM GPIO number -> physical pin on the 40-pin header."""
    reserved: Mapping[int, str]
    """Header GPIOs that devices may not use, with the reason."""
    notes: Mapping[int, str]
    """Special functions worth telling the installer about."""
    header_uarts: tuple[str, ...]
    """Serial device paths that are the UART on GPIO14/15 of this board."""
    uart_pins: tuple[int, int] = (14, 15)
    """GPIOs a header UART occupies."""
    aliases: tuple[str, ...] = field(default=())
    """Other accepted names."""

    @property
    def usable_pins(self) -> frozenset[int]:
        """GPIOs a device may claim."""
        return frozenset(p for p in self.header if p not in self.reserved)

    def physical(self, gpio: int) -> int:
        """Physical header pin of a BCM GPIO."""
        return self.header[gpio]


BOARDS: Mapping[str, BoardProfile] = MappingProxyType({
    b.name: b
    for b in (
        BoardProfile(
            name="pi3b", model="Raspberry Pi 3 Model B", type_code=0x08, mock_revision="a02082",
            header=_J8_40, reserved=_RESERVED, notes=_NOTES,
            # With Bluetooth enabled the header UART is the mini UART ttyS0; serial0 follows it.
            header_uarts=("/dev/serial0", "/dev/ttyS0"), aliases=("3b",),
        ),
        BoardProfile(
            name="pi4b", model="Raspberry Pi 4 Model B", type_code=0x11, mock_revision="c03111",
            header=_J8_40, reserved=_RESERVED, notes=_NOTES,
            header_uarts=("/dev/serial0", "/dev/ttyS0"), aliases=("4b",),
        ),
        BoardProfile(
            name="pi5", model="Raspberry Pi 5", type_code=0x17, mock_revision="d04170",
            header=_J8_40, reserved=_RESERVED, notes=_NOTES,
            # On the Pi 5 the header UART0 is ttyAMA0; ttyAMA10 is the separate debug connector.
            header_uarts=("/dev/serial0", "/dev/ttyAMA0"), aliases=("5",),
        ),
        BoardProfile(
            name="zero2w", model="Raspberry Pi Zero 2 W", type_code=0x12, mock_revision="902120",
            header=_J8_40, reserved=_RESERVED, notes=_NOTES,
            header_uarts=("/dev/serial0", "/dev/ttyS0"), aliases=("zero2", "zero-2-w"),
        ),
    )
})

DEFAULT_MOCK_BOARD = "pi4b"


def board_by_name(name: str) -> BoardProfile:
    """Look a profile up by name or alias (case-insensitive)."""
    key = name.strip().lower()
    for b in BOARDS.values():
        if key == b.name or key in b.aliases:
            return b
    raise UnknownBoardError(
        f"unknown board {name!r}; supported: {', '.join(sorted(BOARDS))}")


def board_for_revision(revision: int | str) -> BoardProfile:
    """Profile of a new-style revision code (as in /proc/cpuinfo or gpiozero's board_info)."""
    code = int(revision, 16) if isinstance(revision, str) else revision
    if not code & (1 << 23):
        raise UnknownBoardError(f"revision {code:06x} is an old-style (pre-Pi 2) board")
    type_code = (code >> 4) & 0xFF
    for b in BOARDS.values():
        if b.type_code == type_code:
            return b
    raise UnknownBoardError(
        f"revision {code:06x} (board type 0x{type_code:02x}) is not a supported board; "
        f"supported: {', '.join(sorted(BOARDS))}")


_PIN_RE = re.compile(r"^(?:(GPIO|BCM)|(BOARD|J8:))?(\d+)$", re.IGNORECASE)


def parse_pin(spec: int | str, board: BoardProfile) -> int:
    """BCM number of a pin spelling, checked against the board; raises PinNotOnBoardError."""
    if isinstance(spec, bool):
        raise PinNotOnBoardError(f"pin {spec!r} is not a pin number or name")
    if isinstance(spec, int):
        gpio = spec
    else:
        m = _PIN_RE.match(str(spec).strip())
        if m is None:
            raise PinNotOnBoardError(f"pin {spec!r} is not a pin name (use e.g. 17 or 'GPIO17')")
        number = int(m.group(3))
        if m.group(2):  # physical numbering
            by_phys = {phys: g for g, phys in board.header.items()}
            if number not in by_phys:
                raise PinNotOnBoardError(
                    f"physical pin {number} on the {board.model} is not a GPIO")
            gpio = by_phys[number]
        else:
            gpio = number
    if gpio not in board.header:
        raise PinNotOnBoardError(f"GPIO{gpio} is not on the {board.model} header")
    if gpio in board.reserved:
        raise PinNotOnBoardError(
            f"GPIO{gpio} on the {board.model} is reserved: {board.reserved[gpio]}")
    return gpio
