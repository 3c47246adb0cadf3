"""Argument types for the command line: numbers checked where they are typed, so a bad one is
one line from argparse (``eschaton chain mine: argument N: ...``) and never a run that does not
end (``--duration nan`` compares false with everything, so a loop bounded by it never stops)."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole(lo: int, hi: int) -> Callable[[str], int]:
    """A whole number in ``lo..hi``."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {n}")
        return n
    return parse


def seconds(lo: float, hi: float) -> Callable[[str], float]:
    """A finite number of seconds in ``lo..hi`` (lo excluded when it is 0)."""
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
        if not math.isfinite(x) or x > hi or x < lo or (lo == 0 and x == 0):
            raise argparse.ArgumentTypeError(f"must be a number of seconds above {lo:g} and at most {hi:g}, "
                                             f"got {text}")
        return x
    return parse


def finite(text: str) -> float:
    """Any finite number."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return x
