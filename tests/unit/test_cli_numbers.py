"""Numbers on the command line are checked where they are typed: one line, exit 2, before
anything runs (a NaN duration once made a loop that never ended, and a mistyped block count
mined for hours)."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from eschaton.cli.args import finite, seconds, whole

EXE = str(Path(sys.executable).parent / "eschaton")


@pytest.mark.parametrize("argv, argument", [
    (["chain", "mine", "99999999999999999999"], "argument N"),
    (["chain", "mine", "0"], "argument N"),
    (["chain", "serve", "--mine-every", "nan"], "--mine-every"),
    (["demo", "--duration", "nan"], "--duration"),
    (["demo", "--duration", "-5"], "--duration"),
    (["valve", "open", "x", "--for", "inf"], "--for"),
    (["meter", "calibrate", "m", "--pulses", "10", "--quantity", "nan"], "--quantity"),
])
def test_bad_numbers_are_one_line(argv: list[str], argument: str, tmp_path: Path) -> None:
    r = subprocess.run([EXE, *argv, "--datadir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and argument in lines[0], r.stderr
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_types_accept_their_range() -> None:
    assert whole(1, 10)("10") == 10
    assert seconds(0, 60)("0.5") == 0.5 and seconds(0, 60)("60") == 60
    assert finite("-2.5") == -2.5
    for parse, text in [(whole(1, 10), "11"), (whole(1, 10), "1.5"), (seconds(0, 60), "0"),
                        (seconds(0, 60), "inf"), (seconds(0, 60), "x"), (finite, "-inf")]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
