"""``Reclaimer``: one collection and heap trim per burst of ended connections, at most once per
interval; ``freeze_startup_objects`` takes the live objects out of the collector's scans."""
from __future__ import annotations

import gc
import platform

from eschaton.net.reclaim import Reclaimer, _glibc_trim, freeze_startup_objects


def test_reclaims_after_every_burst_and_at_most_once_per_interval() -> None:
    now = [0.0]
    done: list[str] = []
    r = Reclaimer(every=3, min_interval=10.0, clock=lambda: now[0],
                  collect=lambda: done.append("collect"), trim=lambda: done.append("trim"))
    assert [r.note() for _ in range(3)] == [False, False, True]
    assert done == ["collect", "trim"] and r.runs == 1
    assert [r.note() for _ in range(5)] == [False] * 5  # a burst, but within the interval
    now[0] = 10.0
    assert r.note() is True  # the connections counted meanwhile were not forgotten
    assert r.runs == 2 and done == ["collect", "trim"] * 2
    assert r.note(2) is False


def test_malloc_trim_is_found_on_glibc() -> None:
    trim = _glibc_trim()
    if platform.libc_ver()[0] == "glibc":
        assert trim is not None
        trim()  # returns nothing, raises nothing
    else:
        assert trim is None


def test_freeze_moves_live_objects_out_of_collections() -> None:
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
