"""Property tests: random operation sequences (with crashes) keep the channel's invariants."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eschaton.core import script as S
from eschaton.core.channel import Oracle
from eschaton.core.channel.errors import InvalidRequest
from eschaton.core.channel.versions import Version, close_balances, close_fee, idx
from tests.unit.channel.pair import Pair, key, params

OPS = st.lists(
    st.tuples(
        st.sampled_from(["pay", "pay", "pay", "escrow", "commit", "return", "bet", "settle", "cancel",
                         "adjust", "crash_in_flight", "crash", "burst", "burst_crash",
                         "escrow_hash", "fulfil", "fulfil_crash"]),
        st.sampled_from(["a", "b"]),
        st.integers(min_value=1, max_value=60_000),
    ),
    min_size=1, max_size=25,
)
ORACLE = Oracle(key("prop-oracle"))
PRE = [key(f"p{i}") for i in range(2)]
HX = {S.sha256(key(f"hx-{n}")): key(f"hx-{n}") for n in range(30)}  # escrow_hash preimages (payee's)


def value(v: Version, role: str) -> int:
    """What ``role`` can count on from ``v`` without knowing any preimage."""
    i = idx(role)
    return (v.balances[i] + sum(e.amount for e in v.escrows if e.payer == role)
            + sum(b.stakes[i] for b in v.bets))


def step(pr: Pair, kind: str, who: str, amount: int, n: int) -> None:
    s = pr.side(who)
    role = s.ch.role
    cur = s.ch.current
    if kind == "pay":
        pr.pay(who, amount)
    elif kind == "escrow":
        pr.turn(who)
        pr.do(who, "offer_escrow", max(amount, 600), key(f"esc-{n}"))
    elif kind == "escrow_hash":
        # Offered by hash alone: only the payee knows the preimage (``hx`` below).
        pr.turn(who)
        pr.do(who, "offer_escrow_hash", max(amount, 600), S.sha256(key(f"hx-{n}")), 0)
    elif kind in ("fulfil", "fulfil_crash"):
        # The payee fulfils one whose preimage it knows; in fulfil_crash the fulfil is lost
        # with the link and both sides restart (reestablish resends it).
        theirs = [e for e in cur.escrows if e.payer != role and e.payment_hash in HX]
        if theirs:
            e = theirs[0]
            pr.online = kind == "fulfil"
            try:
                pr.run(who, s.ch.fulfil_escrow(e.id, HX[e.payment_hash], pr.height))
            finally:
                pr.online = True
            if kind == "fulfil_crash":
                pr.queue.clear()
                pr.crash("a")
                pr.crash("b")
                pr.reconnect()
            pr.flush()
            payer = "b" if who == "a" else "a"
            if pr.side(payer).ch.commits_due():  # the payer lacked the turn: it commits once back
                pr.turn(payer)
                pr.do(payer, "commit_fulfilled")
            assert all(x.id != e.id for x in pr.side(payer).ch.current.escrows)
    elif kind == "commit":
        mine = [e for e in cur.escrows if e.payer == role]
        if mine:
            pr.turn(who)
            pr.do(who, "commit_escrow", mine[0].id)
    elif kind == "return":
        theirs = [e for e in cur.escrows if e.payer != role]
        if theirs:
            pr.turn(who)
            pr.do(who, "return_escrow", theirs[0].id)
    elif kind == "bet":
        ann = ORACLE.announce(f"ev-{n}", ["x", "y"], [key(f"ev-{n}-x"), key(f"ev-{n}-y")], 300)
        pr.turn(who)
        pr.do(who, "propose_bet", ann, ("opener", "acceptor"), (max(amount // 2, 600), max(amount // 3, 600)))
        other = "b" if who == "a" else "a"
        pr.run(other, pr.side(other).ch.accept_proposal())
        pr.flush()
    elif kind == "settle":
        if cur.bets:
            b = cur.bets[0]
            ev = [k for k, a in s.ch.announcements.items() if k == b.announcement]
            assert ev
            ann = s.ch.announcements[b.announcement]
            # the loser settles: whoever does not win the outcome with index (amount % 2)
            o = amount % 2
            loser = "b" if b.winners[o] == "opener" else "a"
            pre = key(f"{ann.event_id}-{'xy'[o]}")
            pr.turn(loser)
            pr.do(loser, "settle_bet", b.id, pre)
    elif kind == "cancel":
        if cur.bets:
            pr.turn(who)
            pr.do(who, "cancel_bet", cur.bets[0].id)
            other = "b" if who == "a" else "a"
            pr.run(other, pr.side(other).ch.accept_proposal())
            pr.flush()
    elif kind == "adjust":
        if cur.bets:
            pr.turn(who)
            pr.do(who, "adjust_bet", cur.bets[0].id, (max(amount // 4, 600), max(amount // 5, 600)))
            other = "b" if who == "a" else "a"
            pr.run(other, pr.side(other).ch.accept_proposal())
            pr.flush()
    elif kind == "crash_in_flight":
        pr.turn(who)
        pr.online = False
        try:
            pr.run(who, s.ch.pay(min(amount, 1_000), pr.height))
        finally:
            pr.online = True
        pr.crash("a")
        pr.crash("b")
        pr.reconnect()
    elif kind == "crash":
        pr.crash(who)
        pr.reconnect()
    elif kind in ("burst", "burst_crash"):
        # Several pipelined payments before any ack; for burst_crash only the first ``keep``
        # reach the peer, every ack and the rest are lost, and both sides restart.
        pr.turn(who)
        k = 2 + amount % 5
        for _ in range(k):
            try:
                pr.run(who, s.ch.pay(1 + amount % 997, pr.height))
            except InvalidRequest:
                break
        if kind == "burst":
            pr.flush()
            return
        keep = amount % (k + 1)
        held = list(pr.queue)[:keep]
        pr.queue.clear()
        other = "b" if who == "a" else "a"
        pr.online = False
        try:
            for _, m in held:
                pr.run(other, pr.side(other).ch.handle(m, pr.height))
        finally:
            pr.online = True
        pr.crash("a")
        pr.crash("b")
        pr.reconnect()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_random_operations_keep_invariants(ops: list[tuple[str, str, int]]) -> None:
    p = params(acceptor_contribution=500_000, lifetime=2_000, max_payment=60_000)
    pr = Pair(p=p, acceptor_funds=True)
    pr.confirm_funding()
    history = [pr.a.ch.current]
    for n, (kind, who, amount) in enumerate(ops):
        try:
            step(pr, kind, who, amount, n)
        except InvalidRequest:
            pass  # an operation the rules refuse (balance, reserve, budget): must change nothing
        a, b = pr.a.ch, pr.b.ch
        assert a.current == b.current, (kind, who)
        assert a.pending is None and b.pending is None, (kind, who)
        cur = a.current
        assert cur.committed() == p.capacity
        assert min(cur.balances) >= 0
        last = history[-1]
        if cur.number != last.number:
            assert cur.number > last.number
            assert cur.locktime <= last.locktime and cur.fee >= last.fee
            # The fee reserve: shares add up to the fee and only grow (a step, once paid, stays
            # its payer's until the close or a re-anchor gives it back).
            assert sum(cur.fee_paid) == cur.fee
            assert all(cur.fee_paid[i] >= last.fee_paid[i] for i in (0, 1))
            if not cur.escrows and not cur.bets:
                assert sum(close_balances(p, cur)) == p.capacity - close_fee(p, cur)
            history.append(cur)
        # Each side's broadcastable best gives it at least what the agreed state gives it.
        for side in (a, b):
            assert side.best is not None
            assert value(side.best, side.role) >= value(cur, side.role)
            assert side.best.number <= cur.number
