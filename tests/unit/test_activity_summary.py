"""Per-payment channel events become one summary line per interval (daemon/activity.py)."""
from __future__ import annotations

import logging

import pytest

from eschaton.daemon.activity import ActivitySummary


def test_payments_are_summed_into_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = logging.getLogger("test.activity")
    summary = ActivitySummary(log, interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.activity"):
        for i in range(1_000):
            now[0] = i * 0.05  # 50 s of payments at 20/s
            assert summary.note("ab", "payment" if i % 2 else "payment_sent", {"amount": 3})
        assert summary.note("ab", "turn", {})
        assert not summary.note("ab", "opened", {})  # not per-payment: the caller logs it
        assert caplog.records == []  # the interval has not passed
        now[0] = 61.0
        summary.note("ab", "payment", {"amount": 5})
        assert [r.getMessage() for r in caplog.records] == [
            "channels in the last 61 s: 501 payments received (1505 sat), 500 sent (1500 sat), "
            "1 direction switches"]
        summary.flush()  # nothing counted since: nothing written
        assert len(caplog.records) == 1


def test_each_payment_is_still_there_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    summary = ActivitySummary(logging.getLogger("test.activity2"), clock=lambda: 0.0)
    with caplog.at_level(logging.DEBUG, logger="test.activity2"):
        summary.note("ab", "payment", {"amount": 7})
        summary.flush()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.INFO]
    assert "payment 7" in caplog.records[0].getMessage()
