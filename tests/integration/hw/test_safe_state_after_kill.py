"""A seller's node holds a normally-closed solenoid open while it sells water; it is SIGKILLed.

The GPIO lines model the kernel's (``hw.mock_lines``): a released output keeps its last level,
as on a Raspberry Pi OS kernel, so the valve stays open after the kill. Then the unit's own
``ExecStopPost=`` command line (parsed from systemd/eschaton.service, with this venv's script and
the seller's config substituted) runs as systemd would run it, and the valve is closed.

The same after a start that fails before the node reaches its GPIO (the data directory is
unusable): the failed start leaves the valve open, the stop-post command closes it.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eschaton.demo.village import start_node, stop_node, wait_ready
from hw.mock_lines import ENV as LINES_ENV
from hw.mock_lines import read_lines
from tests.integration.microgrid.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "systemd" / "eschaton.service"
INSTALLED_SCRIPT = "/opt/eschaton/venv/bin/eschaton"
INSTALLED_CONFIG = "/etc/eschaton/node.toml"


def _unit_value(key: str) -> str:
    (value,) = [line.split("=", 1)[1].strip() for line in UNIT.read_text().splitlines()
                if line.split("=", 1)[0].strip() == key]
    return value


def stop_post_argv(config: Path) -> list[str]:
    """The unit's ExecStopPost, with this venv's console script and ``config`` substituted."""
    argv = shlex.split(_unit_value("ExecStopPost"))
    assert argv[0] == INSTALLED_SCRIPT and INSTALLED_CONFIG in argv, argv
    script = Path(sys.executable).with_name("eschaton")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "eschaton"]
    return head + [str(config) if a == INSTALLED_CONFIG else a for a in argv[1:]]


def stop_timeout_s() -> float:
    """TimeoutStopSec= also bounds ExecStopPost: systemd kills it after this long."""
    return float(_unit_value("TimeoutStopSec"))


@pytest.fixture
def village_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    lines = tmp_path / "gpio-lines.json"
    monkeypatch.setenv(LINES_ENV, str(lines))  # inherited by every node start_node() runs
    from eschaton.demo.story import Story
    from eschaton.demo.village import stop_all
    from tests.integration.microgrid.conftest import small_village

    story = Story(tmp_path, 600.0, lambda s: None, houses=small_village())
    try:
        yield story, lines
    finally:
        stop_all(story.houses)


def _valve_open(lines: Path, gpio: int) -> bool:
    st = read_lines(lines).get(gpio)
    assert st is not None, f"GPIO{gpio} was never driven"
    # Active-low relay board (the config's default): driven low = coil energised = open.
    return st.function == "output" and st.level is False


def _safe_state(config: Path) -> float:
    argv = stop_post_argv(config)
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ),
                       timeout=stop_timeout_s())
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    return took


def test_stop_post_closes_the_valve_a_killed_node_left_open(village_lines) -> None:  # type: ignore[no-untyped-def]
    story, lines = village_lines

    async def scenario() -> None:
        await story.setup()
        seller = story.by["house2"]
        # As installed: the config lives apart from the data directory (/etc/eschaton).
        etc = lines.parent / "etc-eschaton"
        etc.mkdir()
        seller.config = Path(shutil.copy(seller.config, etc / "node.toml"))
        sale = story.sales[0]
        assert sale.valve_pin is not None
        pin = sale.valve_pin

        async def supplying() -> bool:
            return bool(story.sell_row(sale.meter).get("supply") == "on")

        await story.until("the seller to open the valve", supplying, 60)
        assert _valve_open(lines, pin)

        # 1. SIGKILL: nothing in the node runs; the line keeps its level.
        stop_node(seller, sig=signal.SIGKILL)
        assert _valve_open(lines, pin), "the model must keep a killed process's level"
        took = _safe_state(seller.config)
        assert not _valve_open(lines, pin)
        print(f"valve closed by ExecStopPost {took:.2f} s after the kill")

        # The node starts again (Restart=on-failure), holds the valve open again, is killed again.
        start_node(seller)
        await wait_ready(seller)
        await story.until("the restarted seller to open the valve", supplying, 60)
        assert _valve_open(lines, pin)
        stop_node(seller, sig=signal.SIGKILL)
        assert _valve_open(lines, pin)

        # 2. The next start fails before the node reaches its GPIO (its data directory is
        # unusable, as on a dead or full card): the valve is still open after it.
        aside = seller.datadir.with_name(seller.datadir.name + ".aside")
        seller.datadir.rename(aside)
        seller.datadir.write_text("not a directory\n")
        log = seller.log
        seller.log = aside.with_name("house2-failed-start.log")  # its usual log is in the datadir
        try:
            start_node(seller)
            assert seller.proc is not None
            rc = seller.proc.wait(120)
            seller.proc = None
            assert rc != 0, "the start was meant to fail"
            assert _valve_open(lines, pin), "the failed start touched the valve"
            took = _safe_state(seller.config)
            assert not _valve_open(lines, pin)
            print(f"valve closed by ExecStopPost {took:.2f} s after the failed start")
        finally:
            seller.log = log
            seller.datadir.unlink()
            shutil.move(aside, seller.datadir)

    run(scenario())
