"""The hardware factory: one object per process that owns the GPIO backend and every pin claim.

Rules / theory of operation:
- The backend is gpiozero with lgpio on a Pi, or gpiozero's MockFactory in tests and emulation.
  RPi.GPIO is refused: it does not run on the Pi 5. ``select_backend`` decides; the environment
  variable ``GPIOZERO_PIN_FACTORY`` (gpiozero's own switch) wins over configuration so a test or
  an emulator can force the mock without editing the node's TOML.
- Devices never reach for a global pin factory: they get this ``Hardware`` as a keyword-only
  argument, and it passes its gpiozero factory explicitly (``pin_factory=``).
- Every pin is claimed with an owner name before use. A second claim raises
  ``PinConflictError`` naming both owners; a pin the board lacks raises ``PinNotOnBoardError``.
- Edge callbacks: gpiozero keeps only a weak reference to ``when_changed``. ``PulseInput`` keeps a
  strong reference to the callback and ``Hardware`` keeps every device, so a counter can never be
  garbage-collected into silently counting nothing.
"""
from __future__ import annotations

import contextlib
import enum
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hw.boards import DEFAULT_MOCK_BOARD, BoardProfile, board_by_name, board_for_revision, parse_pin
from hw.errors import BackendUnavailableError, HardwareError, PinBusyError, PinConflictError

EdgeCallback = Callable[[Any, bool], None]
"""Called as ``cb(ticks, state)`` from the backend's callback thread (the driving thread on mock)."""


class Backend(enum.Enum):
    """GPIO backends Eschaton supports."""

    MOCK = "mock"
    LGPIO = "lgpio"


def is_raspberry_pi(model_file: str = "/proc/device-tree/model") -> bool:
    """True when the device tree says this is a Raspberry Pi."""
    try:
        return "Raspberry Pi" in Path(model_file).read_text(errors="replace")
    except OSError:
        return False


def select_backend(configured: str | None = None, *, env: Mapping[str, str] | None = None) -> Backend:
    """Pick the backend: ``GPIOZERO_PIN_FACTORY`` if set, else the configured one, else auto."""
    env = os.environ if env is None else env
    from_env = env.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
    choice = from_env or (configured or "auto").strip().lower()
    source = "GPIOZERO_PIN_FACTORY" if from_env else "backend"
    if choice == "mock":
        return Backend.MOCK
    if choice == "lgpio":
        return Backend.LGPIO
    if choice == "auto":
        if is_raspberry_pi():
            return Backend.LGPIO
        raise BackendUnavailableError(
            "no Raspberry Pi found; set backend = \"mock\" in the config or GPIOZERO_PIN_FACTORY=mock")
    if choice in ("rpigpio", "pigpio", "native"):
        raise BackendUnavailableError(
            f"{source}={choice!r} is not supported (it does not run on every board); use lgpio or mock")
    raise BackendUnavailableError(f"unknown GPIO backend {source}={choice!r}; use lgpio or mock")


class PulseInput:
    """An input pin that calls back on edges (for pulse counting)."""

    def __init__(self, device: Any, gpio: int, owner: str, callback: EdgeCallback) -> None:
        self.gpio = gpio
        self.owner = owner
        self._device = device
        self._callback = callback  # strong reference: gpiozero only keeps a weak one
        device.pin.when_changed = callback

    @property
    def is_low(self) -> bool:
        return not self._device.pin.state

    def close(self) -> None:
        if not self._device.closed:
            self._device.pin.when_changed = None
            self._device.close()


class DigitalInput:
    """A polled input (position feedback, tamper switch)."""

    def __init__(self, device: Any, gpio: int, owner: str) -> None:
        self.gpio = gpio
        self.owner = owner
        self._device = device

    @property
    def is_active(self) -> bool:
        return bool(self._device.is_active)

    def close(self) -> None:
        self._device.close()


class DigitalOutput:
    """An output pin (a relay driving a valve)."""

    def __init__(self, device: Any, gpio: int, owner: str) -> None:
        self.gpio = gpio
        self.owner = owner
        self._device = device

    def on(self) -> None:
        self._device.on()

    def off(self) -> None:
        self._device.off()

    @property
    def is_active(self) -> bool:
        return bool(self._device.is_active)

    @property
    def closed(self) -> bool:
        return bool(self._device.closed)

    def close(self) -> None:
        self._device.close()


class Hardware:
    """Owns the gpiozero pin factory, the board profile and all pin claims of this process."""

    def __init__(self, pin_factory: Any, board: BoardProfile, backend: Backend) -> None:
        self.pin_factory = pin_factory
        self.board = board
        self.backend = backend
        self._claims: dict[int, str] = {}
        self._devices: list[PulseInput | DigitalInput | DigitalOutput] = []
        self._lock = threading.Lock()
        self.closed = False

    # -- claims ---------------------------------------------------------------------------
    def claim(self, pin: int | str, owner: str) -> int:
        """Reserve a pin for ``owner``; returns its BCM number."""
        gpio = parse_pin(pin, self.board)
        with self._lock:
            holder = self._claims.get(gpio)
            if holder is not None:
                raise PinConflictError(f"GPIO{gpio} is used by both {holder!r} and {owner!r}")
            self._claims[gpio] = owner
        return gpio

    def claim_uart(self, port: str, owner: str) -> None:
        """A serial port that is the header UART occupies GPIO14/15; claim them."""
        if port in self.board.header_uarts:
            for gpio in self.board.uart_pins:
                self.claim(gpio, owner)

    def claims(self) -> dict[int, str]:
        with self._lock:
            return dict(self._claims)

    # -- devices --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _device_errors(self, gpio: int, owner: str) -> Iterator[None]:
        """Turn backend failures (another process holds the line: lgpio "GPIO busy") into one
        typed error, and give the claim back."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - gpiozero and lgpio raise assorted types
            with self._lock:
                self._claims.pop(gpio, None)
            raise PinBusyError(f"GPIO{gpio} for {owner!r}: {e}") from e

    def pulse_input(self, pin: int | str, *, owner: str, callback: EdgeCallback,
                    pull_up: bool = True, edge: str = "falling") -> PulseInput:
        """Edge-counting input. Open-collector pulse outputs pull the line low: count falling edges."""
        from gpiozero import InputDevice

        if edge not in ("falling", "rising", "both"):
            raise HardwareError(f"edge must be falling, rising or both, not {edge!r}")
        gpio = self.claim(pin, owner)
        with self._device_errors(gpio, owner):
            dev = InputDevice(gpio, pull_up=pull_up, pin_factory=self.pin_factory)
            dev.pin.edges = edge
        # MockPin ignores bounce_time and a 225 Hz flow sensor must not be debounced anyway.
        p = PulseInput(dev, gpio, owner, callback)
        self._devices.append(p)
        return p

    def digital_input(self, pin: int | str, *, owner: str, pull: str | None = "up",
                      active_high: bool = False) -> DigitalInput:
        """Polled input. Default: internal pull-up and active when pulled low (a switch to GND)."""
        from gpiozero import InputDevice

        if pull not in ("up", "down", None):
            raise HardwareError(f"pull must be up, down or none, not {pull!r}")
        gpio = self.claim(pin, owner)
        with self._device_errors(gpio, owner):
            dev = InputDevice(gpio, pull_up=None, active_state=active_high,
                              pin_factory=self.pin_factory)
            if pull is not None:
                dev.pin.pull = pull
        d = DigitalInput(dev, gpio, owner)
        self._devices.append(d)
        return d

    def digital_output(self, pin: int | str, *, owner: str, active_high: bool = True,
                       initial_value: bool = False) -> DigitalOutput:
        """Relay output. Most relay boards are active-low: pass ``active_high=False``."""
        from gpiozero import OutputDevice

        gpio = self.claim(pin, owner)
        with self._device_errors(gpio, owner):
            dev = OutputDevice(gpio, active_high=active_high, initial_value=initial_value,
                               pin_factory=self.pin_factory)
        d = DigitalOutput(dev, gpio, owner)
        self._devices.append(d)
        return d

    def leave_driven(self) -> None:
        """Give up every device without resetting its pin, and forget the claims.

        gpiozero's ``close()`` (and its finaliser) turns an output back into an input; with lgpio
        that is an unpowered, floating line, and a relay on it drops out. A process that exists to
        put outputs into a state and then exit (the safe-state command) must leave them driven:
        the kernel keeps a released output at its last level on Raspberry Pi OS kernels, so the
        state holds after the process is gone. The pin factory is not closed either (it would
        close every pin); the kernel releases the chip when the process exits.
        """
        with self._lock:
            devices, self._devices = self._devices, []
            self._claims.clear()
        for d in devices:
            if isinstance(d, DigitalOutput):
                # GPIODevice.close() resets the pin only while it still holds one.
                d._device._pin = None  # noqa: SLF001 - gpiozero has no public "detach"
            else:
                d.close()  # inputs drive nothing: release them as usual
        self.closed = True

    # -- the installer's pin test ------------------------------------------------------------
    TEST_OWNER = "pin test"

    def read_level(self, pin: int | str) -> tuple[int, bool, str | None]:
        """(GPIO number, its electrical level, who claimed it or None). Reading drives nothing, so any pin
        may be read: a meter's input shows its pulses, a valve's output its drive."""
        gpio = parse_pin(pin, self.board)
        with self._lock:
            owner = self._claims.get(gpio)
        return gpio, bool(self.pin_factory.pin(gpio).state), owner

    def toggle_test_output(self, pin: int | str) -> tuple[int, bool]:
        """Drive a free pin as an output and flip it (the installer's pin test: an LED or a relay
        on the header). A pin a meter, valve or relay holds is refused, naming its owner; the
        first toggle claims the pin for ``TEST_OWNER`` until the node stops."""
        gpio = parse_pin(pin, self.board)
        with self._lock:
            holder = self._claims.get(gpio)
        if holder is not None and holder != self.TEST_OWNER:
            raise PinConflictError(f"GPIO{gpio} is used by {holder!r}: test it through its own command")
        out = next((d for d in self._devices if isinstance(d, DigitalOutput) and d.gpio == gpio
                    and d.owner == self.TEST_OWNER and not d.closed), None)
        if out is None:
            out = self.digital_output(gpio, owner=self.TEST_OWNER)
        if out.is_active:
            out.off()
        else:
            out.on()
        return gpio, out.is_active

    def mock_pin(self, pin: int | str) -> Any:
        """The gpiozero MockPin behind a pin (mock backend only), to drive edges in tests."""
        if self.backend is not Backend.MOCK:
            raise HardwareError("mock_pin() is only available on the mock backend")
        return self.pin_factory.pin(parse_pin(pin, self.board))

    def close(self) -> None:
        """Release every device and the backend. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for d in reversed(self._devices):
            d.close()
        self._devices.clear()
        with self._lock:
            self._claims.clear()
        self.pin_factory.close()

    def __enter__(self) -> Hardware:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_hardware(backend: str | Backend | None = None, *, board: str | None = None,
                  env: Mapping[str, str] | None = None) -> Hardware:
    """Create the process's ``Hardware``.

    ``backend``: "mock", "lgpio", "auto" or None (auto); ``GPIOZERO_PIN_FACTORY`` overrides it.
    ``board``: a profile name; on the mock it picks the emulated board (else
    ``GPIOZERO_MOCK_REVISION``, else Pi 4B); on a Pi it must match the detected board.
    """
    env = os.environ if env is None else env
    chosen = backend if isinstance(backend, Backend) else select_backend(backend, env=env)
    if chosen is Backend.MOCK:
        from gpiozero.pins.mock import MockFactory

        if board is not None:
            profile = board_by_name(board)
        elif env.get("GPIOZERO_MOCK_REVISION"):
            profile = board_for_revision(env["GPIOZERO_MOCK_REVISION"])
        else:
            profile = board_by_name(DEFAULT_MOCK_BOARD)
        from hw.mock_lines import ENV as LINES_ENV  # gpiozero's mock, loaded for the mock alone
        from hw.mock_lines import LineStateMockPin
        from hw.mock_pins import RecordingMockPin

        revision = env.get("GPIOZERO_MOCK_REVISION") if board is None else None
        # ESCHATON_MOCK_GPIO_LINES: lines that outlive this process, as the kernel's do (tests of
        # what a killed node leaves behind; see hw.mock_lines).
        line_file = env.get(LINES_ENV) or None
        factory = MockFactory(revision=revision or profile.mock_revision,
                              pin_class=LineStateMockPin if line_file else RecordingMockPin)
        factory.output_log = []
        factory.line_file = line_file
        return Hardware(factory, profile, chosen)
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        factory = LGPIOFactory()
    except Exception as e:  # noqa: BLE001 - lgpio raises assorted errors off a Pi; report one line
        raise BackendUnavailableError(f"lgpio backend unavailable: {e}") from e
    detected = board_for_revision(factory.board_info.revision)
    if board is not None and board_by_name(board) is not detected:
        factory.close()
        raise BackendUnavailableError(
            f"config says board {board!r} but this is a {detected.model}")
    return Hardware(factory, detected, chosen)
