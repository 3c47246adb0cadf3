"""The ``[hardware]``, ``[metering]``, ``[[meter]]``, ``[[valve]]``, ``[[relay]]`` and ``[[tamper]]``
sections of the node's TOML, validated once into frozen dataclasses.

Rules:
- ``parse_metering_config(data, source=..., text=...)`` validates an already-parsed document;
  the node's loader calls it for these sections, and ``loader.load_metering_config`` reads a file
  for the commands that need these sections alone (``eschaton hw safe-state``, ``meter``, ``valve``).
- Every error is a ``ConfigError`` naming the file, the key (``meter[1].pin``) and, when it can be
  found in the text, the line: ``node.toml:14: meter[1].pin: GPIO17 is already used by
  meter[0] (water)``.
- Checked: unknown keys and types, unknown meter/valve types, pins not on the board (or
  reserved), a pin used twice (including valve feedback pins and the header UART a Modbus meter
  sits on), serial ports that do not exist, links to meters that are not declared.
- Pins are checked against ``[hardware] board`` if given, else the board the mock emulates
  (``GPIOZERO_MOCK_REVISION``), else the board this runs on, else a Pi 4B (all supported boards
  share the 40-pin header, so the answer rarely depends on it).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eschaton.config import defaults as D
from eschaton.config.errors import ConfigContext, ConfigError
from eschaton.core.metering.journal_codec import METER_NAME_RE
from eschaton.errors import LocalError
from hw.boards import DEFAULT_MOCK_BOARD, BoardProfile, board_by_name, board_for_revision, parse_pin
from hw.errors import HardwareError

METER_TYPES = ("pulse_flow", "s0_energy", "modbus_sdm")
VALVE_TYPES = ("solenoid_nc", "motorised")
SECTIONS = ("meter", "valve", "relay", "tamper", "hardware", "metering")
"""The top-level keys this module owns."""


# -- dataclasses ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HardwareConfig:
    """The ``[hardware]`` table."""

    backend: str = D.HW_BACKEND
    """GPIO backend: "auto" (lgpio on a Pi), "lgpio" or "mock". GPIOZERO_PIN_FACTORY overrides."""
    board: str | None = None
    """Board profile (pi3b, pi4b, pi5, zero2w); None = detect (mock: GPIOZERO_MOCK_REVISION)."""


@dataclass(frozen=True, slots=True)
class PulseMeterConfig:
    """A ``[[meter]]`` of type pulse_flow (litres) or s0_energy (kWh)."""

    name: str
    """Unique meter name ([A-Za-z0-9_.-], max 64)."""
    type: str
    """"pulse_flow" or "s0_energy"."""
    pin: int
    """BCM GPIO number of the pulse input."""
    counts_per_unit: float
    """Pulses per litre (``pulses_per_litre``) or impulses per kWh (``impulses_per_kwh``)."""
    pull_up: bool = True
    """Use the internal pull-up (open-collector outputs need one)."""
    edge: str = "falling"
    """Edge that counts: falling, rising or both."""
    max_rate_hz: float | None = None
    """Pulse rate above which the meter is reported faulty."""
    silent_after_s: float | None = None
    """Report the meter silent after this long without a pulse; None disables."""

    @property
    def unit(self) -> str:
        return "L" if self.type == "pulse_flow" else "kWh"


@dataclass(frozen=True, slots=True)
class ModbusMeterConfig:
    """A ``[[meter]]`` of type modbus_sdm (Eastron SDM120/SDM630 class over RS-485)."""

    name: str
    """Unique meter name."""
    port: str
    """Serial device (``/dev/ttyUSB0``) or a pyserial URL (``socket://``, ``rfc2217://``)."""
    model: str = "sdm120"
    """Register map: sdm120 or sdm630."""
    device_id: int = 1
    """Modbus slave address (1-247)."""
    baudrate: int = 9600
    """Line speed (Eastron default 9600)."""
    parity: str = "N"
    """N, E or O."""
    stopbits: int = 1
    """1 or 2."""
    timeout_s: float = D.MODBUS_TIMEOUT_S
    """Per-request response timeout."""
    retries: int = 2
    """Further attempts after a failed request."""
    poll_interval_s: float = D.MODBUS_POLL_INTERVAL_S
    """Seconds between polls by the metering service."""
    silent_after_s: float | None = None
    """Report the meter silent after this long without a good read; None disables."""
    fault_after: int = 3
    """Consecutive failed polls that make the meter faulty."""
    type: str = "modbus_sdm"
    """Always "modbus_sdm"."""


MeterConfig = PulseMeterConfig | ModbusMeterConfig


@dataclass(frozen=True, slots=True)
class ValveConfig:
    """A ``[[valve]]``."""

    name: str
    """Unique valve name."""
    type: str
    """"solenoid_nc" (one relay, fails closed) or "motorised" (two relays, holds position)."""
    pins: tuple[int, ...]
    """Relay GPIOs: (pin,) for a solenoid, (open_pin, close_pin) for a motorised valve."""
    active_high: bool = False
    """Relay board polarity; most opto relay boards are active-low."""
    feedback_pin: int | None = None
    """Position input reading active when the valve is open; None if not wired."""
    feedback_active_high: bool = False
    """Polarity of the feedback input (default: switch to GND, active when low)."""
    travel_s: float = D.VALVE_TRAVEL_S
    """Motorised valves: seconds the motor is driven for a full stroke."""
    meter: str | None = None
    """Flow meter downstream of the valve, for leak detection."""
    settle_s: float = D.VALVE_SETTLE_S
    """Seconds after a command before position and leak rules apply."""
    leak_pulses: int = D.LEAK_PULSES
    """Pulses tolerated while closed before a leak is reported."""


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """A ``[[relay]]`` switching a metered supply."""

    name: str
    """Unique relay name."""
    pin: int
    """BCM GPIO number of the relay input."""
    active_high: bool = False
    """Relay board polarity; most opto relay boards are active-low."""
    contact: str = "no"
    """Contact the load is wired to: "no" (cut on power loss) or "nc" (stays on)."""
    meter: str | None = None
    """The meter measuring this supply, if any."""


@dataclass(frozen=True, slots=True)
class TamperConfig:
    """A ``[[tamper]]`` input."""

    name: str
    """Unique input name."""
    pin: int
    """BCM GPIO number."""
    active_high: bool = True
    """True: tampered when the line is high (switch to GND opened, with the pull-up)."""
    pull: str | None = "up"
    """Internal pull: "up", "down" or "none"."""


@dataclass(frozen=True, slots=True)
class MeteringConfig:
    """Everything the metering service needs."""

    source: str
    """File the configuration came from (for messages)."""
    hardware: HardwareConfig
    """Backend and board."""
    board: BoardProfile
    """The board pins were validated against."""
    meters: tuple[MeterConfig, ...] = ()
    """Declared meters, in file order."""
    valves: tuple[ValveConfig, ...] = ()
    """Declared valves, in file order."""
    tampers: tuple[TamperConfig, ...] = ()
    """Declared tamper inputs."""
    relays: tuple[RelayConfig, ...] = ()
    """Declared supply relays."""
    commit_interval_s: float = D.COMMIT_INTERVAL_S
    """Journal group-commit interval: the most pulses a power cut can lose."""
    journal_dir: str = D.JOURNAL_DIR
    """Journal directory, relative to the data directory unless absolute."""

    def meter(self, name: str) -> MeterConfig:
        for m in self.meters:
            if m.name == name:
                return m
        raise LocalError(f"{self.source}: no meter named {name!r} "
                         f"(declared: {', '.join(m.name for m in self.meters) or 'none'})")

    def valve(self, name: str) -> ValveConfig:
        for v in self.valves:
            if v.name == name:
                return v
        raise LocalError(f"{self.source}: no valve named {name!r} "
                         f"(declared: {', '.join(v.name for v in self.valves) or 'none'})")


# -- parsing --------------------------------------------------------------------------------
class _Table:
    """Typed access to one TOML table, remembering which keys were used."""

    def __init__(self, ctx: ConfigContext, table: str, index: int | None, data: Any) -> None:
        self.ctx, self.table, self.index = ctx, table, index
        self.path: tuple[str | int, ...] = (table,) if index is None else (table, index)
        if not isinstance(data, dict):
            raise ctx.error(self.path, "must be a table")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def err(self, key: str | None, message: str) -> ConfigError:
        return self.ctx.error(self.path if key is None else (*self.path, key), message)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *,
            required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.err(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.err(key, f"must be {_kind_name(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.err(key, f"must be {_kind_name(kinds)}, not {type(value).__name__}")
        return value

    def positive(self, key: str, default: float | None, *, required: bool = False) -> float | None:
        v: float | None = self.get(key, float, default, required=required)
        if v is not None and v <= 0:
            raise self.err(key, f"must be positive, not {v:g}")
        return v

    def finish(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise self.err(extra[0], "unknown key")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def resolve_board(configured: str | None, env: Mapping[str, str] | None = None) -> BoardProfile:
    """The board to validate pins against (see module rules)."""
    env = os.environ if env is None else env
    if configured:
        return board_by_name(configured)
    if env.get("GPIOZERO_MOCK_REVISION"):
        return board_for_revision(env["GPIOZERO_MOCK_REVISION"])
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("Revision"):
                return board_for_revision(line.split(":", 1)[1].strip())
    except (OSError, HardwareError):
        pass
    return board_by_name(DEFAULT_MOCK_BOARD)


def _port_exists(port: str) -> bool:
    return "://" in port or Path(port).exists()


def parse_metering_config(data: Mapping[str, Any], *, source: str = "<config>",
                          text: str | None = None,
                          env: Mapping[str, str] | None = None,
                          check_ports: bool = True,
                          ctx: ConfigContext | None = None) -> MeteringConfig:
    """Validate the metering sections of a parsed TOML document (``text``, if given, locates
    errors; the node's loader passes its ``ctx`` instead).

    ``check_ports=False`` skips the "serial port exists" check: the safe-state command must close
    valves even when a meter's USB adapter has gone.
    """
    if ctx is None:
        ctx = ConfigContext(source, text or "", Path(D.DATADIR))
    source = ctx.source

    hwt = _Table(ctx, "hardware", None, data.get("hardware", {}))
    backend = hwt.get("backend", str, D.HW_BACKEND)
    if backend not in ("auto", "lgpio", "mock"):
        raise hwt.err("backend", f"unknown backend {backend!r}; use auto, lgpio or mock")
    board_name = hwt.get("board", str)
    hwt.finish()
    try:
        board = resolve_board(board_name, env)
    except HardwareError as e:
        raise hwt.err("board", str(e)) from None
    hardware = HardwareConfig(backend=backend, board=board_name)

    mt = _Table(ctx, "metering", None, data.get("metering", {}))
    commit_interval = mt.positive("commit_interval_s", D.COMMIT_INTERVAL_S)
    journal_dir = mt.get("journal_dir", str, D.JOURNAL_DIR)
    mt.finish()

    names: dict[str, str] = {}
    pins: dict[int, str] = {}

    def name_of(t: _Table) -> str:
        n: str = t.get("name", str, required=True)
        if not METER_NAME_RE.match(n):
            raise t.err("name", f"{n!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if n in names:
            raise t.err("name", f"{n!r} is already the name of {names[n]}")
        names[n] = f"{t.table}[{t.index}]"
        return n

    def pin_of(t: _Table, key: str, who: str, *, required: bool = True) -> int | None:
        raw = t.get(key, (int, str), required=required)
        if raw is None:
            return None
        try:
            gpio = parse_pin(raw, board)
        except HardwareError as e:
            raise t.err(key, str(e)) from None
        if gpio in pins:
            raise t.err(key, f"GPIO{gpio} is already used by {pins[gpio]}")
        pins[gpio] = f"{t.table}[{t.index}] ({who})"
        return gpio

    def list_of(key: str) -> list[Any]:
        v = data.get(key, [])
        if not isinstance(v, list):
            raise ctx.error((key,), f"must be an array of tables: [[{key}]]")
        return v

    meters: list[MeterConfig] = []
    for i, raw in enumerate(list_of("meter")):
        t = _Table(ctx, "meter", i, raw)
        typ = t.get("type", str, required=True)
        if typ not in METER_TYPES:
            raise t.err("type", f"unknown meter type {typ!r}; known: {', '.join(METER_TYPES)}")
        name = name_of(t)
        silent = t.positive("silent_after_s", None)
        if typ in ("pulse_flow", "s0_energy"):
            pin = pin_of(t, "pin", name)
            assert pin is not None
            if typ == "pulse_flow":
                factor = t.positive("pulses_per_litre", D.PULSES_PER_LITRE)
                max_hz = t.positive("max_rate_hz", D.FLOW_MAX_HZ)
            else:
                factor = t.positive("impulses_per_kwh", D.IMPULSES_PER_KWH)
                max_hz = t.positive("max_rate_hz", D.S0_MAX_HZ)
            edge = t.get("edge", str, "falling")
            if edge not in ("falling", "rising", "both"):
                raise t.err("edge", f"must be falling, rising or both, not {edge!r}")
            assert factor is not None
            meters.append(PulseMeterConfig(
                name=name, type=typ, pin=pin, counts_per_unit=factor,
                pull_up=t.get("pull_up", bool, True), edge=edge, max_rate_hz=max_hz,
                silent_after_s=silent))
        else:
            port = t.get("port", str, required=True)
            if check_ports and not _port_exists(port):
                raise t.err("port", f"serial port {port} does not exist")
            model = t.get("model", str, "sdm120")
            if model not in ("sdm120", "sdm630"):
                raise t.err("model", f"unknown model {model!r}; known: sdm120, sdm630")
            device_id = t.get("device_id", int, 1)
            if not 1 <= device_id <= 247:
                raise t.err("device_id", f"must be 1-247, not {device_id}")
            parity = t.get("parity", str, "N")
            if parity not in ("N", "E", "O"):
                raise t.err("parity", f"must be N, E or O, not {parity!r}")
            stopbits = t.get("stopbits", int, 1)
            if stopbits not in (1, 2):
                raise t.err("stopbits", f"must be 1 or 2, not {stopbits}")
            baudrate = t.get("baudrate", int, 9600)
            if baudrate not in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200):
                raise t.err("baudrate", f"{baudrate} is not a standard baud rate")
            retries = t.get("retries", int, 2)
            if not 0 <= retries <= 10:
                raise t.err("retries", f"must be 0-10, not {retries}")
            fault_after = t.get("fault_after", int, 3)
            if fault_after < 1:
                raise t.err("fault_after", "must be at least 1")
            if port in board.header_uarts:
                for gpio in board.uart_pins:
                    if gpio in pins:
                        raise t.err("port", f"{port} is the header UART on GPIO"
                                    f"{board.uart_pins[0]}/{board.uart_pins[1]}, but GPIO{gpio} "
                                    f"is already used by {pins[gpio]}")
                    pins[gpio] = f"meter[{i}] ({name}, serial port)"
            timeout = t.positive("timeout_s", D.MODBUS_TIMEOUT_S)
            poll = t.positive("poll_interval_s", D.MODBUS_POLL_INTERVAL_S)
            assert timeout is not None and poll is not None
            meters.append(ModbusMeterConfig(
                name=name, port=port, model=model, device_id=device_id, baudrate=baudrate,
                parity=parity, stopbits=stopbits, timeout_s=timeout, retries=retries,
                poll_interval_s=poll, silent_after_s=silent, fault_after=fault_after))
        t.finish()

    meter_names = {m.name: m for m in meters}
    valves: list[ValveConfig] = []
    for i, raw in enumerate(list_of("valve")):
        t = _Table(ctx, "valve", i, raw)
        typ = t.get("type", str, required=True)
        if typ not in VALVE_TYPES:
            raise t.err("type", f"unknown valve type {typ!r}; known: {', '.join(VALVE_TYPES)}")
        name = name_of(t)
        if typ == "solenoid_nc":
            p = pin_of(t, "pin", name)
            assert p is not None
            relay_pins: tuple[int, ...] = (p,)
        else:
            po = pin_of(t, "open_pin", name)
            pc = pin_of(t, "close_pin", name)
            assert po is not None and pc is not None
            relay_pins = (po, pc)
        feedback = pin_of(t, "feedback_pin", f"{name} feedback", required=False)
        meter = t.get("meter", str)
        if meter is not None:
            if meter not in meter_names:
                raise t.err("meter", f"no meter named {meter!r} is declared")
            if meter_names[meter].type != "pulse_flow":
                raise t.err("meter", f"{meter!r} is not a pulse_flow meter")
        leak = t.get("leak_pulses", int, D.LEAK_PULSES)
        if leak < 0:
            raise t.err("leak_pulses", "must not be negative")
        settle = t.get("settle_s", float, D.VALVE_SETTLE_S)
        if settle < 0:
            raise t.err("settle_s", "must not be negative")
        travel = t.positive("travel_s", D.VALVE_TRAVEL_S) if typ == "motorised" else D.VALVE_TRAVEL_S
        assert travel is not None
        valves.append(ValveConfig(
            name=name, type=typ, pins=relay_pins, active_high=t.get("active_high", bool, False),
            feedback_pin=feedback, feedback_active_high=t.get("feedback_active_high", bool, False),
            travel_s=travel, meter=meter, settle_s=settle, leak_pulses=leak))
        t.finish()

    relays: list[RelayConfig] = []
    for i, raw in enumerate(list_of("relay")):
        t = _Table(ctx, "relay", i, raw)
        name = name_of(t)
        pin = pin_of(t, "pin", name)
        assert pin is not None
        contact = t.get("contact", str, "no")
        if contact not in ("no", "nc"):
            raise t.err("contact", f"must be \"no\" or \"nc\", not {contact!r}")
        meter = t.get("meter", str)
        if meter is not None and meter not in meter_names:
            raise t.err("meter", f"no meter named {meter!r} is declared")
        relays.append(RelayConfig(name=name, pin=pin, active_high=t.get("active_high", bool, False),
                                  contact=contact, meter=meter))
        t.finish()

    tampers: list[TamperConfig] = []
    for i, raw in enumerate(list_of("tamper")):
        t = _Table(ctx, "tamper", i, raw)
        name = name_of(t)
        pin = pin_of(t, "pin", name)
        assert pin is not None
        pull = t.get("pull", str, "up")
        if pull not in ("up", "down", "none"):
            raise t.err("pull", f"must be up, down or none, not {pull!r}")
        tampers.append(TamperConfig(name=name, pin=pin, active_high=t.get("active_high", bool, True),
                                    pull=None if pull == "none" else pull))
        t.finish()

    assert commit_interval is not None
    return MeteringConfig(source=source, hardware=hardware, board=board, meters=tuple(meters),
                          valves=tuple(valves), tampers=tuple(tampers), relays=tuple(relays),
                          commit_interval_s=commit_interval, journal_dir=journal_dir)


def has_metering(doc: Mapping[str, Any]) -> bool:
    """Does the document declare any of these sections?"""
    return any(k in doc for k in SECTIONS)
