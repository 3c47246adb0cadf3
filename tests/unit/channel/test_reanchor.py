"""Re-anchoring without stopping payments (sans-IO core, two in-memory endpoints).

Once the re-anchor transaction R is fully signed, both sides move to R's output at once and
keep paying; the old anchor is followed until R confirms (``on_old_anchor``)."""
from __future__ import annotations

import pytest

from eschaton.core import tx as T
from eschaton.core.channel import ChannelState
from eschaton.core.channel.errors import InvalidRequest
from eschaton.core.channel.reanchor import MAX_UNCONFIRMED_ANCHORS
from tests.unit.channel.pair import Pair, opened, params


def _both_on(pr: Pair, funding_txid: str) -> None:
    for n in ("a", "b"):
        ch = pr.side(n).ch
        assert ch.state is ChannelState.OPEN, n
        assert ch.setup is not None and ch.setup.funding_txid == funding_txid, n
    assert pr.a.ch.current == pr.b.ch.current


def test_payments_both_ways_continue_across_chained_unconfirmed_reanchors() -> None:
    pr = opened(p=params(lifetime=200))
    f0 = pr.a.ch.setup.funding_txid  # type: ignore[union-attr]
    pr.pay("a", 50_000)
    pr.pay("b", 1_000)
    pr.turn("a")
    pr.do("a", "reanchor_channel", 600, 500)
    r1 = T.parse_tx(pr.a.broadcasts[-1])
    _both_on(pr, T.txid(r1))
    for i in range(6):  # switches on the new anchor, no block
        pr.pay("a" if i % 2 else "b", 100 + i)
    # A second re-anchor before the first confirmed: R2 spends R1's (unconfirmed) output.
    pr.turn("a")
    pr.do("a", "reanchor_channel", 900, 500)
    r2 = T.parse_tx(pr.a.broadcasts[-1])
    assert T.inputs_of(r2)[0].txid == T.txid(r1)
    _both_on(pr, T.txid(r2))
    assert pr.a.ch.watched_anchors() == pr.b.ch.watched_anchors() == [(f0, 0), (T.txid(r1), 0)]
    pr.pay("b", 10)
    pr.pay("a", 20)
    # One block confirms both: R2's confirmation alone clears the whole chain.
    for n in ("a", "b"):
        ch = pr.side(n).ch
        pr.run(n, ch.on_old_anchor(T.txid(r1), 0, T.txid(r2), True, pr.height))
        assert ch.watched_anchors() == []
    _both_on(pr, T.txid(r2))


def test_unconfirmed_reanchors_are_bounded() -> None:
    pr = opened(p=params(lifetime=200))
    pr.pay("a", 50_000)
    life = 200
    for _ in range(MAX_UNCONFIRMED_ANCHORS):
        life += 50
        pr.do("a", "reanchor_channel", life, 500)
    assert len(pr.a.ch.anchors) == MAX_UNCONFIRMED_ANCHORS
    with pytest.raises(InvalidRequest, match="mine one first"):
        pr.a.ch.reanchor_channel(life + 50, 500, pr.height)
    pr.pay("a", 1)  # the channel itself goes on


def test_turn_asked_during_the_proposal_is_granted_on_the_switch() -> None:
    pr = opened()
    pr.pay("a", 50_000)
    pr.run("a", pr.a.ch.reanchor_channel(2_000, 500, pr.height))  # a holds the turn
    pr.run("b", pr.b.ch.request_turn())  # b wants to pay back meanwhile
    pr.flush()
    assert pr.a.ch.state is ChannelState.OPEN and not pr.a.ch.have_turn and pr.b.ch.have_turn
    pr.do("b", "pay", 700)
    assert pr.a.ch.current == pr.b.ch.current and pr.a.ch.current.locktime == 2_000 - pr.p.locktime_step


def test_a_crash_at_every_step_of_a_reanchor_converges_on_one_anchor() -> None:
    steps = 0
    while True:
        pr = opened()
        pr.pay("a", 50_000)
        pr.pay("b", 1_000)
        pr.turn("a")
        pr.run("a", pr.a.ch.reanchor_channel(2_000, 500, pr.height))
        # Deliver ``steps`` messages, then crash the side about to receive the next one (it
        # loses nothing it persisted, and what was in flight is lost with the link).
        n = 0
        while pr.queue and n < steps:
            sender, msg = pr.queue.popleft()
            to = "b" if sender == "a" else "a"
            pr.run(to, pr.side(to).ch.handle(msg, pr.height))
            n += 1
        done = not pr.queue
        victim = "b" if pr.queue and pr.queue[0][0] == "a" else "a"
        pr.crash(victim)
        pr.reconnect()
        pr.reconnect()
        a, b = pr.a.ch, pr.b.ch
        assert a.state is b.state is ChannelState.OPEN, (steps, a.state, b.state)
        assert a.setup == b.setup and a.anchors == b.anchors and a.current == b.current, steps
        moved = a.current.locktime == 2_000
        assert moved == bool(a.anchors), steps
        pr.pay("b", 10)  # both ways, on whichever anchor they agree on
        pr.pay("a", 10)
        assert pr.a.ch.current == pr.b.ch.current
        if done:
            assert moved
            break
        steps += 1
    assert steps >= 3  # propose, refund, refund + anchor, anchor


def test_an_old_version_against_an_unconfirmed_reanchor() -> None:
    pr = opened()
    f0 = pr.a.ch.setup.funding_txid  # type: ignore[union-attr]
    pr.pay("a", 50_000)
    pr.pay("b", 1_000)
    pr.turn("a")
    pr.do("a", "reanchor_channel", 2_000, 500)
    raw = pr.a.broadcasts[-1]
    pr.pay("b", 3_000)
    # In the mempool: answered with R, reported.
    pr.run("a", pr.a.ch.on_old_anchor(f0, 0, "ee" * 32, False, pr.height))
    assert pr.a.broadcasts[-1] == raw and pr.a.notes[-1].kind == "reanchor_contested"
    assert pr.a.ch.state is ChannelState.OPEN
    # Confirmed: the new anchor can never exist; the channel ended on chain.
    pr.run("a", pr.a.ch.on_old_anchor(f0, 0, "ee" * 32, True, pr.height))
    assert pr.a.ch.state is ChannelState.CLOSED and pr.a.notes[-1].kind == "closed"


def test_reanchor_near_the_old_lifetime_is_broadcast_again_and_reported_once() -> None:
    pr = opened(p=params(lifetime=300))
    pr.pay("a", 50_000)
    pr.do("a", "reanchor_channel", 2_000, 500)
    raw = pr.a.broadcasts[-1]
    old_locktime = pr.a.ch.anchors[0]["old_locktime"]
    assert old_locktime == 300 - pr.p.locktime_step  # the first payment opened an epoch
    n = len(pr.a.broadcasts)
    pr.run("a", pr.a.ch.on_block(old_locktime - pr.p.safety_margin - 1, 0))
    assert len(pr.a.broadcasts) == n
    for h in (old_locktime - pr.p.safety_margin, old_locktime - 1):
        pr.run("a", pr.a.ch.on_block(h, 0))
    assert pr.a.broadcasts[n:] == [raw]
    assert [x.kind for x in pr.a.notes].count("reanchor_unconfirmed") == 1
    assert pr.a.ch.state is ChannelState.OPEN  # the new anchor's budget is what counts


def test_a_look_at_the_chain_from_before_the_move_is_not_a_foreign_spend() -> None:
    """The watcher asked who spends the funding output, and the channel moved to R's output
    before the answer came: R spending the old output is reported as a spend of "the" funding.
    It must not be taken for someone else's close."""
    pr = opened()
    pr.pay("a", 50_000)
    pr.do("a", "reanchor_channel", 2_000, 500)
    rtxid = pr.a.ch.anchors[0]["txid"]
    for n in ("a", "b"):
        ch = pr.side(n).ch
        pr.run(n, ch.on_funding_spent(rtxid, False, pr.height))
        assert ch.state is ChannelState.OPEN and ch.anchors, n
        pr.run(n, ch.on_funding_spent(rtxid, True, pr.height))
        assert ch.state is ChannelState.OPEN and not ch.anchors, n
    pr.pay("b", 10)
    pr.pay("a", 10)
