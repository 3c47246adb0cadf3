"""The forwarding state machine: every transition, every failure reason, persist before act."""
from __future__ import annotations

import hashlib
import random

import pytest

from eschaton.core.link.identity import NodeKeys
from eschaton.core.routing import forward as W
from eschaton.core.routing import onion as O
from eschaton.core.routing.policy import FeePolicy, Margins
from eschaton.core.routing.route import Edge, Route, build_route, route_onion, route_secrets

H0 = 1000
LOCK = 1500  # every channel's current nLockTime
ED = 36
PRE = b"\x11" * 32
HASH = hashlib.sha256(PRE).digest()
SECRET = b"\x22" * 32
SESSION = b"\x33" * 32
M = Margins()


def _nodes(n: int) -> list[NodeKeys]:
    rng = random.Random(n)
    return [NodeKeys.generate(rng.randbytes) for _ in range(n)]


def _cid(a: int, b: int) -> bytes:
    return bytes([a, b]) * 16


POLICIES = [FeePolicy(base=1, ppm=1000, hold_ppm=10, delta=24), FeePolicy(base=5, ppm=200, hold_ppm=0, delta=30),
            FeePolicy(base=0, ppm=5000, hold_ppm=100, delta=40)]


class Line:
    """payer - n1 - ... - payee, one Forwarder per node after the payer, channels as lists."""

    def __init__(self, n: int = 5, amount: int = 50_000, balance: int = 1_000_000) -> None:
        self.keys = _nodes(n)
        self.ids = [k.node_id.raw for k in self.keys]
        self.edges = [Edge(_cid(i, i + 1), self.ids[i], self.ids[i + 1], POLICIES[i % 3], LOCK, ED)
                      for i in range(n - 1)]
        self.fw = [W.Forwarder(k.x25519_private(), POLICIES[i % 3], M) for i, k in enumerate(self.keys)]
        self.balance = {e.channel: balance for e in self.edges}
        self.requests: dict[bytes, W.PayeeRequest] = {HASH: W.PayeeRequest(PRE, amount, SECRET, 18, False)}
        self.amount = amount
        self.persisted: list[list[W.Forward]] = [[] for _ in range(n)]

    def route(self) -> Route:
        return build_route(self.edges, self.amount, H0, 18)

    def out_channels(self, i: int) -> list[W.OutChannel]:
        if i + 1 >= len(self.keys):
            return []
        e = self.edges[i]
        return [W.OutChannel(e.channel, e.target, self.balance.get(e.channel, 0), e.locktime, e.escrow_delta)]

    def incoming(self, i: int, amount: int, timeout: int, eid: int = 1) -> W.Incoming:
        e = self.edges[i - 1]
        return W.Incoming(e.channel, eid, e.source, amount, HASH, timeout, e.locktime)

    def payee(self, h: bytes) -> W.PayeeRequest | None:
        return self.requests.get(h)

    def deliver(self, i: int, inc: W.Incoming, packet: bytes, height: int = H0) -> list[W.FwdAction]:
        acts = self.fw[i].on_incoming(inc, packet, height, self.out_channels(i), self.payee)
        self._check_persist_first(i, acts)
        return acts

    def _check_persist_first(self, i: int, acts: list[W.FwdAction]) -> None:
        if any(not isinstance(a, W.PersistForward) for a in acts):
            assert isinstance(acts[0], W.PersistForward), "an action left before its record was persisted"
        self.persisted[i] += [a.record for a in acts if isinstance(a, W.PersistForward)]

    def run(self, packet: bytes, route: Route, height: int = H0) -> tuple[int, list[W.FwdAction]]:
        """Forward hop by hop until someone fulfils or fails; returns (hop index, its actions)."""
        inc = self.incoming(1, route.amounts[0], route.timeouts[0])
        for i in range(1, len(self.keys)):
            acts = self.deliver(i, inc, packet, height)
            offer = [a for a in acts if isinstance(a, W.OfferDownstream)]
            if not offer:
                return i, acts
            o = offer[0]
            acts2 = self.fw[i].on_offered(o.name, o.channel, 1)
            self._check_persist_first(i, acts2)
            inc = W.Incoming(o.channel, 1, self.ids[i], o.amount, o.payment_hash, o.timeout, LOCK)
            packet = o.packet
        raise AssertionError("nobody answered")


def _one(acts: list[W.FwdAction], kind: type) -> object:
    found = [a for a in acts if isinstance(a, kind)]
    assert len(found) == 1, acts
    return found[0]


def test_a_payment_along_five_nodes_fulfils_back_with_exact_fees() -> None:
    line = Line(5)
    route = line.route()
    packet = route_onion(route, SESSION, HASH, SECRET)
    last, acts = line.run(packet, route)
    assert last == 4
    ful = _one(acts, W.FulfilUpstream)
    assert isinstance(ful, W.FulfilUpstream) and ful.preimage == PRE
    # each hop offered exactly what the payer computed, and keeps exactly its policy's fee
    for i in range(1, 4):
        rec = line.fw[i].records[f"{line.edges[i - 1].channel.hex()}:1"]
        assert rec.state is W.FwdState.OFFERED
        assert rec.amount_out == route.amounts[i] and rec.timeout_out == route.timeouts[i]
        assert rec.fee == route.fees[i - 1] == POLICIES[i % 3].fee(route.amounts[i], route.timeouts[i] - H0)
        assert rec.incoming.timeout - rec.timeout_out >= POLICIES[i % 3].delta
    assert route.amounts[-1] == line.amount
    assert route.total == line.amount + sum(route.fees)
    # the preimage travels back: each hop persists it before fulfilling upstream
    for i in range(3, 0, -1):
        acts = line.fw[i].on_downstream_fulfilled(line.edges[i].channel, 1, PRE)
        assert isinstance(acts[0], W.PersistForward) and acts[0].record.preimage == PRE
        assert acts[0].record.state is W.FwdState.FULFILLED
        f = _one(acts, W.FulfilUpstream)
        assert isinstance(f, W.FulfilUpstream) and f.channel == line.edges[i - 1].channel
        done = line.fw[i].on_upstream_settled(line.edges[i - 1].channel, 1)
        assert isinstance(done[0], W.PersistForward) and done[0].record.state is W.FwdState.SETTLED
    assert line.fw[4].on_upstream_settled(line.edges[3].channel, 1)[0].record.state is W.FwdState.SETTLED  # type: ignore[union-attr]
    # timeouts strictly decrease along the path, each above its channel's nLockTime + escrow_delta
    assert list(route.timeouts) == sorted(route.timeouts, reverse=True)
    assert all(t >= LOCK + ED for t in route.timeouts)
    assert route.lockup == route.timeouts[0] - H0


def _fail_at(line: Line, packet: bytes, route: Route, height: int = H0) -> tuple[int, str, tuple[int, int] | None]:
    """Run until a failure and carry it back to the payer; (failing hop, code, what the payer reads)."""
    i, acts = line.run(packet, route, height)
    fail = _one(acts, W.FailUpstream)
    assert isinstance(fail, W.FailUpstream) and isinstance(acts[0], W.PersistForward)
    blob, code = fail.failure, fail.reason
    for j in range(i - 1, 0, -1):  # roll back from the failing hop to the first
        back = line.fw[j].on_downstream_failed(line.edges[j].channel, 1, blob, code)
        assert isinstance(back[0], W.PersistForward) and back[0].record.state is W.FwdState.FAILED
        up = _one(back, W.FailUpstream)
        assert isinstance(up, W.FailUpstream) and up.reason == code
        blob = up.failure
        assert line.fw[j].on_upstream_returned(line.edges[j - 1].channel, 1)[0].record.state is W.FwdState.RETURNED  # type: ignore[union-attr]
    return i, code, O.failure_read(route_secrets(route, SESSION), blob)


def test_no_route_at_the_hop_without_a_channel_to_its_successor() -> None:
    line = Line(5)
    route = line.route()
    packet = route_onion(route, SESSION, HASH, SECRET)
    line.edges[2] = Edge(_cid(9, 9), line.ids[2], line.ids[0], POLICIES[2], LOCK, ED)  # node 2 has no channel to 3
    i, code, read = _fail_at(line, packet, route)
    assert (i, code, read) == (2, "no_route", (1, W.Reason.NO_ROUTE.value))


def test_insufficient_balance() -> None:
    line = Line(5)
    line.balance[line.edges[3].channel] = 10
    route = line.route()
    i, code, read = _fail_at(line, route_onion(route, SESSION, HASH, SECRET), route)
    assert (i, code, read) == (3, "insufficient_balance", (2, W.Reason.INSUFFICIENT_BALANCE.value))


def test_fee_too_low() -> None:
    line = Line(4)
    route = line.route()
    cheap = Route(route.edges, (route.amounts[0] - 1,) + route.amounts[1:], route.timeouts, H0)
    i, code, read = _fail_at(line, route_onion(cheap, SESSION, HASH, SECRET), cheap)
    assert (i, code, read) == (1, "fee_too_low", (0, W.Reason.FEE_TOO_LOW.value))


def test_timeout_too_low_for_our_delta() -> None:
    line = Line(4)
    route = line.route()
    t = list(route.timeouts)
    t[1] = t[0] - POLICIES[1].delta + 1  # hop 1 would keep one block less than its delta
    bad = Route(route.edges, route.amounts, tuple(t), H0)
    i, code, read = _fail_at(line, route_onion(bad, SESSION, HASH, SECRET), bad)
    assert (i, code, read) == (1, "timeout_too_low", (0, W.Reason.TIMEOUT_TOO_LOW.value))


def test_timeout_too_low_for_the_successor_channels_locktime() -> None:
    line = Line(4)
    route = line.route()
    line.edges[1] = Edge(line.edges[1].channel, line.ids[1], line.ids[2], POLICIES[1], route.timeouts[1], ED)
    i, code, _ = _fail_at(line, route_onion(route, SESSION, HASH, SECRET), route)
    assert (i, code) == (1, "timeout_too_low")


def test_timeout_too_low_for_the_incoming_versions_locktime() -> None:
    line = Line(3)
    route = line.route()
    inc = W.Incoming(line.edges[0].channel, 1, line.ids[0], route.amounts[0], HASH, route.timeouts[0],
                     route.timeouts[0] - M.upstream_room() + 1)
    acts = line.deliver(1, inc, route_onion(route, SESSION, HASH, SECRET))
    assert _one(acts, W.FailUpstream).reason == "timeout_too_low"  # type: ignore[attr-defined]


def test_expired_incoming() -> None:
    line = Line(4)
    route = line.route()
    late = route.timeouts[0] - M.upstream_room() + 1
    i, code, read = _fail_at(line, route_onion(route, SESSION, HASH, SECRET), route, height=late)
    assert (i, code, read) == (1, "expired", (0, W.Reason.EXPIRED.value))


def test_unknown_payee_wrong_secret_and_unknown_hash() -> None:
    for secret, requests in ((b"\x99" * 32, None), (SECRET, {})):
        line = Line(4)
        if requests is not None:
            line.requests = requests
        route = line.route()
        i, code, read = _fail_at(line, route_onion(route, SESSION, HASH, secret), route)
        assert (i, code, read) == (3, "unknown_payee", (2, W.Reason.UNKNOWN_PAYEE.value))


def test_expired_request_and_underpaid_request() -> None:
    line = Line(3)
    line.requests[HASH] = W.PayeeRequest(PRE, line.amount, SECRET, 18, True)
    route = line.route()
    assert _fail_at(line, route_onion(route, SESSION, HASH, SECRET), route)[1] == "expired"
    line = Line(3)
    line.requests[HASH] = W.PayeeRequest(PRE, line.amount + 1, SECRET, 18, False)
    route = line.route()
    assert _fail_at(line, route_onion(route, SESSION, HASH, SECRET), route)[1] == "fee_too_low"


def test_bad_onion_fails_without_a_blob() -> None:
    line = Line(3)
    route = line.route()
    packet = bytearray(route_onion(route, SESSION, HASH, SECRET))
    packet[100] ^= 1
    i, acts = line.run(bytes(packet), route)
    fail = _one(acts, W.FailUpstream)
    assert i == 1 and isinstance(fail, W.FailUpstream) and fail.reason == "bad_onion" and fail.failure == b""


def test_payment_to_a_node_id_carries_its_preimage() -> None:
    line = Line(3)
    line.requests = {}
    route = line.route()
    i, acts = line.run(route_onion(route, SESSION, HASH, PRE), route)
    assert i == 2 and _one(acts, W.FulfilUpstream).preimage == PRE  # type: ignore[attr-defined]


def test_payer_held_waits_for_release_and_expires_without_it() -> None:
    line = Line(3)
    line.requests = {}
    route = line.route()
    i, acts = line.run(route_onion(route, SESSION, HASH, bytes(32)), route)
    assert i == 2 and acts[0].record.state is W.FwdState.HELD  # type: ignore[union-attr]
    assert not [a for a in acts if isinstance(a, (W.FulfilUpstream, W.FailUpstream))]
    assert line.fw[2].on_block(H0 + 1) == []
    with pytest.raises(ValueError):
        line.fw[2].release(HASH, b"\x00" * 32)
    rel = line.fw[2].release(HASH, PRE)
    assert isinstance(rel[0], W.PersistForward) and rel[0].record.state is W.FwdState.FULFILLED
    assert _one(rel, W.FulfilUpstream).preimage == PRE  # type: ignore[attr-defined]
    # a second held payment that is never released fails "expired" near its timeout
    line2 = Line(3)
    line2.requests = {}
    route = line2.route()
    line2.run(route_onion(route, SESSION, HASH, bytes(32)), route)
    late = line2.fw[2].on_block(route.timeouts[-1] - M.upstream_room())
    assert _one(late, W.FailUpstream).reason == "expired"  # type: ignore[attr-defined]


def test_a_fulfilled_forward_whose_upstream_does_not_commit_goes_on_chain_in_time() -> None:
    line = Line(4)
    route = line.route()
    line.run(route_onion(route, SESSION, HASH, SECRET), route)
    line.fw[2].on_downstream_fulfilled(line.edges[2].channel, 1, PRE)
    t_in = route.timeouts[1]
    assert line.fw[2].on_block(t_in - M.upstream_room() - 1) == []
    close = line.fw[2].on_block(t_in - M.upstream_room())
    assert isinstance(_one(close, W.CloseUpstream), W.CloseUpstream)
    line.fw[2].on_upstream_settled(line.edges[1].channel, 1)
    assert line.fw[2].on_block(t_in) == []


def test_resume_replays_the_owed_action_and_redelivery_is_idempotent() -> None:
    line = Line(4)
    route = line.route()
    packet = route_onion(route, SESSION, HASH, SECRET)
    inc = line.incoming(1, route.amounts[0], route.timeouts[0])
    acts = line.deliver(1, inc, packet)
    offer = _one(acts, W.OfferDownstream)
    # crash after the record was persisted, before the offer: a new Forwarder from the store
    again = W.Forwarder(line.keys[1].x25519_private(), POLICIES[1], M, line.persisted[1])
    assert again.resume() == [offer]
    assert again.on_incoming(inc, packet, H0, line.out_channels(1), line.payee) == [offer]
    again.on_offered(offer.name, offer.channel, 7)  # type: ignore[attr-defined]
    assert again.resume() == []
    acts = again.on_downstream_fulfilled(offer.channel, 7, PRE)  # type: ignore[attr-defined]
    restarted = W.Forwarder(line.keys[1].x25519_private(), POLICIES[1], M, [acts[0].record])  # type: ignore[union-attr]
    assert restarted.resume() == [acts[1]]
    # a fulfil for an escrow that is not a forward is not ours to handle
    assert restarted.on_downstream_fulfilled(b"\x00" * 32, 1, PRE) == []


def test_illegal_transitions_raise() -> None:
    rec = W.Forward(W.Incoming(b"c" * 32, 1, b"p" * 32, 10, HASH, 2000, 1500), W.FwdState.SETTLED)
    with pytest.raises(W.IllegalTransition, match="SETTLED -> FAILED"):
        rec.to(W.FwdState.FAILED)
    for state, allowed in W.TRANSITIONS.items():
        for target in W.FwdState:
            r = W.Forward(rec.incoming, state)
            if target in allowed:
                assert r.to(target).state is target
            else:
                with pytest.raises(W.IllegalTransition):
                    r.to(target)


def test_a_policy_below_the_on_chain_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="below the on-chain minimum 24"):
        W.Forwarder(b"\x01" * 32, FeePolicy(delta=23), Margins(confirm=6, safety=6))


def test_fee_grace_lets_a_payer_a_few_blocks_ahead_pass() -> None:
    line = Line(3)
    route = build_route(line.edges, line.amount, H0 + 3, 18)  # payer sees 3 more blocks than the hops
    i, acts = line.run(route_onion(route, SESSION, HASH, SECRET), route, height=H0)
    assert i == 2 and _one(acts, W.FulfilUpstream)


