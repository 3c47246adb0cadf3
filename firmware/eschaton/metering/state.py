"""Small durable state files of the metering area: per-unit calibrations, calibration runs in
progress, and the last commanded valve states.

Rules:
- Files are JSON in ``<datadir>/<journal_dir>/``, replaced atomically (write a temp file, fsync,
  rename, fsync the directory) so a power cut leaves the old or the new file, never half of one.
- A calibration measured on a unit overrides the factor in the TOML for that meter name; the
  TOML's value is the nominal one the measurement is checked against.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eschaton.errors import LocalError
from eschaton.store.private import make_dirs


class StateFileError(LocalError):
    """A state file is unreadable or malformed."""


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise StateFileError(f"{path}: cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise StateFileError(f"{path}: expected a JSON object")
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    make_dirs(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        os.fchmod(f.fileno(), 0o600)  # the open() mode is filtered by the umask; this is not
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class CalibrationStore:
    """Measured counts-per-unit per meter, and calibration runs in progress."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "calibration.json"

    def factors(self) -> dict[str, float]:
        return {k: float(v["counts_per_unit"]) for k, v in _read(self.path).get("meters", {}).items()}

    def save_factor(self, meter: str, counts_per_unit: float, *, pulses: int, quantity: float,
                    wall_ns: int) -> None:
        data = _read(self.path)
        data.setdefault("meters", {})[meter] = {
            "counts_per_unit": counts_per_unit, "pulses": pulses, "quantity": quantity,
            "wall_ns": wall_ns}
        data.get("runs", {}).pop(meter, None)
        _write(self.path, data)

    def start_run(self, meter: str, start_pulses: int, wall_ns: int) -> None:
        data = _read(self.path)
        data.setdefault("runs", {})[meter] = {"start_pulses": start_pulses, "wall_ns": wall_ns}
        _write(self.path, data)

    def run(self, meter: str) -> dict[str, int] | None:
        r = _read(self.path).get("runs", {}).get(meter)
        return None if r is None else {"start_pulses": int(r["start_pulses"]),
                                       "wall_ns": int(r["wall_ns"])}


class ValveStateStore:
    """The last command given to each valve (what ``valve status`` reports as commanded)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "valves.json"

    def all(self) -> dict[str, dict[str, Any]]:
        return dict(_read(self.path))

    def save(self, valve: str, open_: bool, wall_ns: int) -> None:
        data = _read(self.path)
        data[valve] = {"commanded_open": open_, "wall_ns": wall_ns}
        _write(self.path, data)
