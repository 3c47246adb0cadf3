"""Errors of the hardware layer, split by fault like the rest of Eschaton."""
from __future__ import annotations

from eschaton.errors import LocalError, TransientError


class HardwareError(LocalError):
    """Root of hardware-layer errors caused by our own configuration or calls."""


class UnknownBoardError(HardwareError):
    """The board name or revision code is not one of the supported profiles."""


class PinNotOnBoardError(HardwareError):
    """A pin was asked for that the board does not expose for general use."""


class PinConflictError(HardwareError):
    """A pin was claimed twice (two devices, or a device and the serial port)."""


class PinBusyError(HardwareError):
    """The backend refused a pin (another process, e.g. the running node, holds it)."""


class BackendUnavailableError(HardwareError):
    """The selected GPIO backend cannot run here (e.g. lgpio without a Raspberry Pi)."""


class HardwareTransientError(TransientError):
    """A hardware operation failed in a way that may work on retry."""
