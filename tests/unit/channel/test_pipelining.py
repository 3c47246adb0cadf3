"""Pipelined single-signed updates: several versions in flight, cumulative acks, resends."""
from __future__ import annotations

import pytest

from eschaton.core.channel.errors import InvalidRequest
from eschaton.core.channel.messages import ChannelErrorMsg, Update, UpdateAck
from eschaton.core.channel.updates import MAX_INFLIGHT
from tests.unit.channel.pair import opened


def _sent_payments(notes: list) -> list[tuple[int, int]]:
    return [(n.data["number"], n.data["amount"]) for n in notes if n.kind == "payment_sent"]


def test_pipelined_payments_all_land_in_order() -> None:
    pr = opened()
    pr.turn("a")
    for amount in (100, 200, 300, 400, 500):
        pr.run("a", pr.a.ch.pay(amount, pr.height))
    assert [type(m) for _, m in pr.queue] == [Update] * 5
    assert pr.a.ch.pending is not None and pr.a.ch.pending.number == 5 and pr.a.ch.current.number == 0
    # the persisted outbox holds every unacknowledged version, not just the newest
    assert pr.a.snapshot is not None and len(pr.a.snapshot["outbox"]) == 5
    pr.flush()
    assert pr.a.ch.pending is None and pr.a.ch.current == pr.b.ch.current
    assert pr.b.ch.current.number == 5 and pr.b.ch.current.balances[1] == 1_500
    assert _sent_payments(pr.a.notes) == [(1, 100), (2, 200), (3, 300), (4, 400), (5, 500)]
    assert pr.b.ch.best == pr.b.ch.current  # the payee can broadcast the newest


def test_window_is_bounded() -> None:
    pr = opened()
    pr.turn("a")
    for _ in range(MAX_INFLIGHT):
        pr.run("a", pr.a.ch.pay(10, pr.height))
    with pytest.raises(InvalidRequest, match="waiting for the peer"):
        pr.a.ch.pay(10, pr.height)
    pr.flush()
    pr.pay("a", 10)
    assert pr.b.ch.current.number == MAX_INFLIGHT + 1


def test_acks_are_cumulative() -> None:
    pr = opened()
    pr.turn("a")
    for _ in range(4):
        pr.run("a", pr.a.ch.pay(1_000, pr.height))
    pr.online = False
    while pr.queue:  # the payee takes all four, its acks are lost
        _, m = pr.queue.popleft()
        pr.run("b", pr.b.ch.handle(m, pr.height))
    pr.online = True
    pr.run("a", pr.a.ch.handle(UpdateAck(pr.a.ch.channel_id, 3), pr.height))
    assert pr.a.ch.current.number == 3 and pr.a.ch.pending is not None and pr.a.ch.pending.number == 4
    assert len(pr.a.ch.outbox) == 1
    pr.run("a", pr.a.ch.handle(UpdateAck(pr.a.ch.channel_id, 4), pr.height))
    assert pr.a.ch.pending is None and pr.a.ch.current == pr.b.ch.current
    pr.run("a", pr.a.ch.handle(UpdateAck(pr.a.ch.channel_id, 2), pr.height))  # late duplicate: nothing
    assert pr.a.ch.current.number == 4


def test_ack_beyond_what_was_signed_is_refused() -> None:
    pr = opened()
    pr.turn("a")
    pr.run("a", pr.a.ch.pay(1_000, pr.height))
    with pytest.raises(Exception, match="ack for unknown version 2"):
        pr.a.ch.handle(UpdateAck(pr.a.ch.channel_id, 2), pr.height)
    assert pr.a.ch.pending is not None and pr.a.ch.pending.number == 1


def test_turn_moves_and_mutual_steps_wait_until_nothing_is_in_flight() -> None:
    pr = opened()
    pr.turn("a")
    pr.run("a", pr.a.ch.pay(1_000, pr.height))
    pr.run("a", pr.a.ch.pay(1_000, pr.height))
    with pytest.raises(InvalidRequest):
        pr.a.ch.close(pr.height)
    pr.run("b", pr.b.ch.request_turn())  # queued behind A's two updates
    pr.flush()
    assert pr.b.ch.have_turn and not pr.a.ch.have_turn
    assert pr.b.ch.current.number == 2 == pr.a.ch.current.number
    pr.pay("b", 300)
    assert pr.a.ch.current == pr.b.ch.current and pr.a.ch.current.number == 3
    assert pr.a.ch.current.locktime < pr.b.ch.params.lifetime  # the switch took the earlier nLockTime


def test_pipelined_escrow_offer_then_commit() -> None:
    pr = opened()
    pr.turn("a")
    pre = bytes(range(32))
    eid, acts = pr.a.ch.offer_escrow(5_000, pre, pr.height)
    pr.run("a", acts)
    pr.run("a", pr.a.ch.commit_escrow(eid, pr.height))  # builds on the offer still in flight
    pr.flush()
    assert pr.b.ch.current.number == 2 and not pr.b.ch.current.escrows
    assert pr.b.ch.current.balances[1] == 5_000 and pr.a.ch.current == pr.b.ch.current


@pytest.mark.parametrize("delivered", [0, 1, 2, 3, 4])
def test_partial_delivery_then_both_crash_reconcile(delivered: int) -> None:
    pr = opened()
    pr.turn("a")
    for _ in range(4):
        pr.run("a", pr.a.ch.pay(250, pr.height))
    held = list(pr.queue)[:delivered]
    pr.queue.clear()
    pr.online = False
    for _, m in held:
        pr.run("b", pr.b.ch.handle(m, pr.height))  # persisted by B, acks lost
    pr.online = True
    pr.crash("a")
    pr.crash("b")
    assert pr.b.ch.current.number == delivered
    before = len(pr.b.sent)
    pr.reconnect()
    assert not any(isinstance(m, ChannelErrorMsg) for m in pr.b.sent[before:])  # older resends ignored
    assert pr.a.ch.pending is None and pr.a.ch.current == pr.b.ch.current
    assert pr.b.ch.current.number == 4 and pr.b.ch.current.balances[1] == 1_000
    assert pr.a.ch.have_turn and not pr.b.ch.have_turn
    pr.pay("b", 100)
    assert pr.a.ch.current == pr.b.ch.current


def test_older_resend_is_ignored_by_the_payee() -> None:
    pr = opened()
    pr.turn("a")
    acts = pr.a.ch.pay(100, pr.height)
    first = acts[0].messages[0]  # type: ignore[union-attr]
    pr.run("a", acts)
    pr.flush()
    pr.pay("a", 100)
    assert pr.b.ch.handle(first, pr.height) == []
    assert pr.b.ch.current.number == 2
