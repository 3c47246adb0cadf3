"""Turn requests survive a lost message and a holder's crash: ``reestablish`` asks again."""
from __future__ import annotations

from eschaton.core.channel.messages import TurnGrant, TurnRequest
from tests.unit.channel.pair import opened


def _requests(msgs: list) -> int:
    return sum(isinstance(m, TurnRequest) for m in msgs)


def test_turn_request_dropped_on_the_wire_is_resent_on_reestablish_and_granted() -> None:
    pr = opened()
    pr.do("a", "pay", 50_000)  # the opener holds the turn; B has something to pay with
    pr.online = False  # the link is down: B's request never reaches A
    pr.run("b", pr.b.ch.request_turn())
    pr.online = True
    assert not pr.queue and not pr.b.ch.have_turn
    sent_before = _requests(pr.b.sent)
    pr.reconnect()
    assert _requests(pr.b.sent) == sent_before + 1  # asked again by reestablish
    assert pr.b.ch.have_turn and not pr.a.ch.have_turn
    assert not pr.b.ch.turn_wanted
    a_before = pr.a.ch.current.balances[0]
    pr.do("b", "pay", 5_000)
    assert pr.a.ch.current == pr.b.ch.current and pr.a.ch.current.balances[0] == a_before + 5_000


def test_request_forgotten_by_a_crashed_holder_is_granted_after_reestablish() -> None:
    pr = opened()
    pr.do("a", "pay", 50_000)
    pr.run("a", pr.a.ch.pay(1_000, pr.height))  # A has a version in flight: the grant must wait
    pr.run("b", pr.b.ch.request_turn())
    # A receives its own ack's trigger only later: deliver B's request to A first, drop the rest.
    upd = [m for s, m in pr.queue if s == "a"]
    req = [m for s, m in pr.queue if s == "b"]
    pr.queue.clear()
    assert len(req) == 1 and isinstance(req[0], TurnRequest)
    pr.run("a", pr.a.ch.handle(req[0], pr.height))
    assert pr.a.ch.turn_requested  # held in memory until the version is acknowledged
    for m in upd:  # B takes the version; its ack is lost with A's crash
        pr.online = False
        pr.run("b", pr.b.ch.handle(m, pr.height))
        pr.online = True
    pr.crash("a")
    assert not pr.a.ch.turn_requested  # a request is never persisted on its own
    pr.reconnect()
    assert pr.b.ch.have_turn and not pr.a.ch.have_turn
    assert pr.a.ch.current == pr.b.ch.current and pr.a.ch.pending is None
    pr.do("b", "pay", 700)
    assert pr.a.ch.current.number == pr.b.ch.current.number


def test_no_request_is_resent_once_granted_or_by_the_holder() -> None:
    pr = opened()
    pr.turn("b")  # granted in one round trip
    assert not pr.b.ch.turn_wanted
    before = (_requests(pr.a.sent), _requests(pr.b.sent))
    pr.reconnect()
    assert (_requests(pr.a.sent), _requests(pr.b.sent)) == before
    assert pr.b.ch.have_turn


def test_a_resent_request_after_a_lost_grant_does_not_move_the_turn_twice() -> None:
    pr = opened()
    pr.do("a", "pay", 50_000)
    pr.run("b", pr.b.ch.request_turn())
    _, req = pr.queue.popleft()
    pr.online = False  # A grants; the grant is lost
    pr.run("a", pr.a.ch.handle(req, pr.height))
    pr.online = True
    assert not pr.a.ch.have_turn and not pr.b.ch.have_turn
    pr.reconnect()  # A resends its grant (outbox), B its request (A ignores it: it granted)
    assert pr.b.ch.have_turn and not pr.a.ch.have_turn
    assert sum(isinstance(m, TurnGrant) for m in pr.a.sent) == 2  # the same grant, resent
    pr.do("b", "pay", 300)
    assert pr.a.ch.current.number == pr.b.ch.current.number == 2
