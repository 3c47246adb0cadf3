"""Give back the memory that closed connections leave in reference cycles.

Why this exists (measured, see ``docs/network.md``): every TCP connection leaves a few dozen
objects in reference cycles when it closes: asyncio's selector transport refers to itself
through its read callback, the ``noise`` library's connection, protocol and handshake state
refer to each other, and a link closed by an exception keeps it, whose traceback refers back to
the session. Reference counting never frees a cycle; the cyclic collector does, but it runs
by allocation counts, and its full collections wait until the objects that survived the
younger ones number a quarter of all long-lived objects. In a node (some 230,000 long-lived
objects after start) that is thousands of connections, and meanwhile glibc's heap grows around
the garbage and keeps the pages: the flooded node's RSS climbed about 3.5 MiB per round of 300
garbage connections.

The remedy has two parts:
- ``freeze_startup_objects()`` once the node is up: the objects that exist then (modules,
  classes, config, stores) live as long as the process, so the collector stops scanning them
  (``gc.freeze``). A full collection then costs milliseconds instead of tens of them
  (x86 with a loaded machine: 40-75 ms before, under 10 ms after), cheap enough to run after
  a burst.
- ``Reclaimer.note()`` for each inbound connection that ends: after ``every`` of them (and at
  most once per ``min_interval``) it runs a full collection and, on glibc, ``malloc_trim(0)``,
  which hands the heap pages freed by it back to the kernel. So a flood holds at most
  ``every`` connections' worth of cyclic garbage, whatever its length.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _glibc_trim() -> Callable[[], None] | None:
    """``malloc_trim(0)`` when the C library is glibc (musl has none; it also needs none)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (only glibc exports it)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def malloc_trim() -> None:
        trim(0)

    return malloc_trim


def freeze_startup_objects() -> None:
    """Collect what start-up left behind, then move every object alive now out of the collector's
    view for good (they stay alive and are still freed by reference counting if dropped)."""
    gc.collect()
    gc.freeze()


class Reclaimer:
    """Counts ended connections; after ``every`` of them collects cycles and trims the heap."""

    def __init__(self, *, every: int = 64, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 collect: Callable[[], object] = gc.collect,
                 trim: Callable[[], None] | None = None) -> None:
        self.every = every
        self.min_interval = min_interval
        self._clock = clock
        self._collect = collect
        self._trim = trim if trim is not None else _glibc_trim()
        self._count = 0
        self._next = float("-inf")
        self.runs = 0
        """Reclaims run since start (for status output and tests)."""

    def note(self, n: int = 1) -> bool:
        """``n`` more connections ended; True if this call reclaimed."""
        self._count += n
        now = self._clock()
        if self._count < self.every or now < self._next:
            return False
        self._count = 0
        self._next = now + self.min_interval
        self._collect()
        if self._trim is not None:
            self._trim()
        self.runs += 1
        return True
