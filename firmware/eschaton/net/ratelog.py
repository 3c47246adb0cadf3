"""Log lines that a peer can trigger at will, at most one per interval per kind.

A flood of connections must not become a flood of log lines (on a Pi the journal sits on the SD
card). The first occurrence of a kind is logged at once; later ones within ``interval`` are only
counted, and the next line of that kind says how many were left out. No traceback is ever
attached: these are expected conditions, not bugs.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """``note(kind, message)``: one line per ``interval`` seconds per kind, with a count."""

    def __init__(self, logger: logging.Logger, *, interval: float = 10.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval
        self._level = level
        self._clock = clock
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.lines = 0
        """Lines actually written (for tests and status)."""

    def note(self, kind: str, message: str) -> None:
        now = self._clock()
        if now < self._next.get(kind, float("-inf")):
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._next[kind] = now + self._interval
        left_out = self._suppressed.pop(kind, 0)
        if left_out:
            message = f"{message} ({left_out} more like it in the last {self._interval:g} s not logged)"
        self.lines += 1
        self._log.log(self._level, message)
