"""``BlockSchedule``: when a village chain makes its next block, with time as an input."""
from __future__ import annotations

import pytest

from eschaton.chain.embedded.mining import REASON_SCHEDULE, REASON_TRANSACTION, BlockSchedule
from eschaton.chain.errors import InvalidRequest


def test_off_never_due() -> None:
    s = BlockSchedule(0, 0, now=100.0)
    s.on_mempool(101.0, 3)
    assert s.deadline() is None and s.due(1e12) is None


def test_interval_counts_from_the_last_block() -> None:
    s = BlockSchedule(60, 0, now=0.0)
    assert s.deadline() == 60.0 and s.due(59.9) is None and s.due(60.0) == REASON_SCHEDULE
    s.on_block(30.0, 0)  # someone else's block (chain mine) restarts the wait
    assert s.deadline() == 90.0 and s.due(60.0) is None


def test_after_tx_from_the_first_transaction_of_an_empty_mempool() -> None:
    s = BlockSchedule(0, 2, now=0.0)
    assert s.deadline() is None
    s.on_mempool(10.0, 1)
    s.on_mempool(11.5, 2)  # a second transaction does not push the block back
    assert s.deadline() == 12.0 and s.due(11.9) is None and s.due(12.0) == REASON_TRANSACTION
    s.on_block(12.1, 0)
    assert s.deadline() is None


def test_a_block_that_leaves_transactions_behind_waits_again() -> None:
    s = BlockSchedule(0, 2, now=0.0)
    s.on_mempool(1.0, 5)
    s.on_block(3.0, 2)  # a full block (or non-final transactions) left two
    assert s.deadline() == 5.0


def test_transactions_that_leave_the_mempool_cancel_the_wait() -> None:
    s = BlockSchedule(0, 2, now=0.0)
    s.on_mempool(1.0, 1)
    s.on_mempool(1.5, 0)  # replaced away, or mined elsewhere
    assert s.deadline() is None


def test_both_the_earlier_wins_and_the_transaction_reason_is_named() -> None:
    s = BlockSchedule(600, 2, now=0.0, mempool_size=1)  # a persisted mempool at start
    assert s.deadline() == 2.0 and s.due(2.0) == REASON_TRANSACTION
    s.on_block(2.0, 0)
    assert s.deadline() == 602.0 and s.due(602.0) == REASON_SCHEDULE


def test_negative_refused() -> None:
    with pytest.raises(InvalidRequest):
        BlockSchedule(-1, 0, now=0.0)
