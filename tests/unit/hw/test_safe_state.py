"""The safe-state path (``eschaton hw safe-state``, the unit's ExecStopPost): every valve and relay
driven to the level the node's orderly stop reaches, on mock pins, and kept there afterwards."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eschaton.config.loader import load_metering_config
from eschaton.config.metering import parse_metering_config
from eschaton.metering.safe_state import drive_safe_state
from hw.mock import FakeClock, mock_hardware, output_history
from hw.mock_lines import ENV as LINES_ENV
from hw.mock_lines import read_lines

ROOT = Path(__file__).resolve().parents[3]

CONFIG = """
[hardware]
backend = "mock"

[[valve]]
name = "nc"
type = "solenoid_nc"
pin = 22

[[valve]]
name = "ball"
type = "motorised"
open_pin = 5
close_pin = 6
travel_s = 12

[[relay]]
name = "socket"
pin = 17

[[relay]]
name = "pump"
pin = 27
contact = "nc"
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "firmware"), str(ROOT)]))
    env.pop("GPIOZERO_PIN_FACTORY", None)
    env.pop(LINES_ENV, None)
    env.update(extra)
    return env


def _cli(*argv: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eschaton", *argv], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def test_each_kind_reaches_the_level_of_an_orderly_stop() -> None:
    cfg = parse_metering_config(__import__("tomllib").loads(CONFIG))
    clock = FakeClock()
    hw = mock_hardware()
    results = drive_safe_state(cfg, hw, clock=clock, sleep=clock.advance)
    assert [(r.name, r.state, r.error) for r in results] == [
        ("nc", "closed", None), ("socket", "off", None), ("pump", "off", None),
        ("ball", "closed", None)]
    # Active-low relay boards: True = released.
    assert output_history(hw, 22) == [True]           # solenoid coil unpowered: closed
    assert output_history(hw, 17) == [True]           # NO contact released: load cut
    assert output_history(hw, 27) == [False]          # NC contact pulled in: load cut
    assert output_history(hw, 5) == [True]            # OPEN never energised
    assert output_history(hw, 6) == [True, False, True]  # CLOSE for the travel time, released
    assert clock.t - 1000.0 >= 12.0
    hw.leave_driven()
    # Left driven: still outputs at those levels (gpiozero's close would make them inputs).
    for gpio, level in ((22, True), (17, True), (27, False), (5, True), (6, True)):
        pin = hw.mock_pin(gpio)
        assert (pin.function, pin.state) == ("output", level), gpio


def test_close_would_have_released_the_nc_relay() -> None:
    """Why ``leave_driven`` exists: closing the devices turns the NC relay's line into an input."""
    cfg = parse_metering_config(__import__("tomllib").loads(CONFIG))
    clock = FakeClock()
    hw = mock_hardware()
    drive_safe_state(cfg, hw, clock=clock, sleep=clock.advance)
    pins = {g: hw.mock_pin(g) for g in (22, 27)}
    for d in list(hw._devices):
        d.close()
    assert pins[27].function == "input"


def test_one_busy_pin_does_not_stop_the_others() -> None:
    cfg = parse_metering_config(__import__("tomllib").loads(CONFIG))
    clock = FakeClock()
    hw = mock_hardware()
    hw.claim(17, "someone else")
    results = drive_safe_state(cfg, hw, clock=clock, sleep=clock.advance)
    errors = {r.name: r.error for r in results}
    assert errors["socket"] is not None and "someone else" in errors["socket"]
    assert [n for n, e in errors.items() if e is None] == ["nc", "pump", "ball"]
    assert output_history(hw, 22) == [True]


def test_cli_drives_and_reports_and_the_levels_outlive_it(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text(CONFIG.replace("travel_s = 12", "travel_s = 0.2"))
    lines = tmp_path / "lines.json"
    p = _cli("hw", "safe-state", "--config", str(cfg), "--json", env=_env(**{LINES_ENV: str(lines)}))
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert {r["name"]: r["state"] for r in rows} == {"nc": "closed", "socket": "off", "pump": "off",
                                                      "ball": "closed"}
    state = read_lines(lines)
    assert {g: (s.function, s.level) for g, s in state.items()} == {
        22: ("output", True), 17: ("output", True), 27: ("output", False),
        5: ("output", True), 6: ("output", True)}


def test_cli_reads_only_the_config_and_needs_no_consensus_code(tmp_path: Path) -> None:
    """A full disk or a broken data directory must not matter: nothing is written, no chain code
    (libbitcoinkernel) is loaded, and a meter whose serial adapter is gone is no obstacle."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    cfg = conf_dir / "node.toml"
    cfg.write_text(CONFIG + textwrap.dedent("""
        [[meter]]
        name = "grid"
        type = "modbus_sdm"
        port = "/dev/ttyUSB-unplugged"
        """))
    work = tmp_path / "cwd"
    work.mkdir()
    probe = ("import sys\nfrom eschaton.cli.main import main\n"
             "rc = main(['hw', 'safe-state', '--config', sys.argv[1]])\n"
             "assert 'pbk' not in sys.modules, 'consensus code imported'\n"
             "assert not [m for m in sys.modules if m.startswith(('eschaton.chain', 'pymodbus'))]\n"
             "raise SystemExit(rc)\n")
    env = _env(HOME=str(work), ESCHATON_DATADIR=str(tmp_path / "no-datadir"),
               PYTHONDONTWRITEBYTECODE="1")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    p = subprocess.run([sys.executable, "-c", probe, str(cfg)], capture_output=True, text=True,
                       env=env, cwd=work, timeout=60)
    assert p.returncode == 0, p.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    # The node's own reader still insists on the port.
    with pytest.raises(Exception, match="does not exist"):
        load_metering_config(cfg)


def test_cli_without_outputs_opens_no_gpio_backend(tmp_path: Path) -> None:
    """The image's default config has no valves; on a machine with no GPIO (QEMU) the backend
    "auto" cannot open, and the stop-post command must still succeed."""
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nname = "n"\n')
    p = _cli("hw", "safe-state", "--config", str(cfg), "--json", env=_env())
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == []


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    p = _cli("hw", "safe-state", "--config", str(tmp_path / "missing.toml"), env=_env())
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "does not exist" in p.stderr
    cfg = tmp_path / "node.toml"
    cfg.write_text('[[valve]]\nname = "nc"\ntype = "solenoid_nc"\npin = 22\n')
    # No [hardware] backend and no Raspberry Pi here: the GPIO backend cannot open.
    p = _cli("hw", "safe-state", "--config", str(cfg), env=_env())
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Raspberry Pi" in p.stderr, p.stderr


def test_mock_lines_keep_a_killed_process_s_levels(tmp_path: Path) -> None:
    """The file-backed line model: SIGKILL leaves an output at its level (as a Raspberry Pi OS
    kernel does); an orderly close returns the line to an input."""
    lines = tmp_path / "lines.json"
    holder = ("import sys, time\nfrom hw.factory import open_hardware\n"
              "hw = open_hardware('mock')\nout = hw.digital_output(22, owner='v', active_high=False)\n"
              "out.on()\nprint('on', flush=True)\n"
              "if sys.argv[1] == 'close':\n    hw.close()\n    print('closed', flush=True)\n"
              "time.sleep(60)\n")
    env = _env(**{LINES_ENV: str(lines)})
    for mode, expect in (("kill", ("output", False)), ("close", ("input", None))):
        proc = subprocess.Popen([sys.executable, "-c", holder, mode], stdout=subprocess.PIPE,
                                text=True, env=env)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "on\n"
            if mode == "close":
                assert proc.stdout.readline() == "closed\n"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        st = read_lines(lines)[22]
        assert (st.function, st.level) == expect, mode
