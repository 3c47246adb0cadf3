"""Channel announcements, the graph behind its store interface, and the path finder with retries."""
from __future__ import annotations

import hashlib
import random
from dataclasses import replace

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core import script as S
from eschaton.core.link.identity import NodeKeys
from eschaton.core.routing import forward as W
from eschaton.core.routing import onion as O
from eschaton.core.routing.graph import (
    ANNOUNCEMENT_LEN,
    BadAnnouncement,
    ChannelAnnouncement,
    FundingOutput,
    Graph,
    GraphStore,
    MemoryGraphStore,
)
from eschaton.core.routing.pathfind import FAIL_PENALTY, HALF_LIFE, History, find_route, retry
from eschaton.core.routing.policy import FeePolicy, Margins
from eschaton.core.routing.route import Edge, Route, route_onion, route_secrets

RNG = random.Random(17)
KEYS = [NodeKeys.generate(RNG.randbytes) for _ in range(6)]
A, B, C, D, E, X = (k.node_id.raw for k in KEYS)
CHEAP = FeePolicy(base=1, ppm=100, hold_ppm=0, delta=24)
DEAR = FeePolicy(base=50, ppm=5000, hold_ppm=10, delta=40)
H = 1000


def _fkey(i: int) -> bytes:
    return coincurve.PrivateKey(bytes([i + 1]) * 32).public_key.format(compressed=True)


def _ann(i: int, n1: NodeKeys, n2: NodeKeys, cap: int = 1_000_000, p1: FeePolicy = CHEAP, p2: FeePolicy = CHEAP,
         seq: int = 1, lock: int = 1500, life: int = 3000) -> ChannelAnnouncement:
    ann = ChannelAnnouncement(bytes([i]) * 32, hashlib.sha256(bytes([i])).digest(), 0, cap, _fkey(2 * i), _fkey(2 * i + 1),
                              n1.node_id.raw, n2.node_id.raw, life, lock, 36, p1, p2, seq)
    return ann.signed_by(n1).signed_by(n2)


def _out(ann: ChannelAnnouncement) -> FundingOutput:
    return FundingOutput(ann.capacity, S.p2wsh(S.multisig_2of2(ann.key_1, ann.key_2)))


def test_announcement_round_trip_needs_both_signatures() -> None:
    ann = _ann(1, KEYS[0], KEYS[1])
    raw = ann.encode()
    assert len(raw) == ANNOUNCEMENT_LEN
    assert ChannelAnnouncement.decode(raw) == ann
    half = replace(ann, sig_2=b"")
    with pytest.raises(ValueError, match="both ends"):
        half.encode()
    with pytest.raises(ValueError, match="only an end"):
        ann.signed_by(KEYS[5])
    assert half.signed_by_end(KEYS[0].node_id.raw) and not half.signed_by_end(KEYS[1].node_id.raw)
    assert ChannelAnnouncement.parse(half.half_encode()).sig_2 == bytes(64)
    assert not half.signed_by_end(KEYS[5].node_id.raw)
    forged = replace(ann, sig_2=KEYS[5].sign(b"x" + ann.body()))
    with pytest.raises(BadAnnouncement, match="does not verify"):
        ChannelAnnouncement.decode(forged.encode())


def test_every_changed_byte_is_refused() -> None:
    raw = _ann(1, KEYS[0], KEYS[1]).encode()
    for where in range(0, len(raw), 3):
        bad = bytearray(raw)
        bad[where] ^= 0x04
        with pytest.raises(BadAnnouncement):
            ChannelAnnouncement.decode(bytes(bad))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=ANNOUNCEMENT_LEN + 4))
def test_fuzz_decode(raw: bytes) -> None:
    with pytest.raises(BadAnnouncement):
        ChannelAnnouncement.decode(raw)


def test_graph_checks_the_funding_output_and_drops_closed_channels() -> None:
    store: GraphStore = MemoryGraphStore()
    g = Graph(store)
    ann = _ann(1, KEYS[0], KEYS[1])
    assert g.offer(ann, None).why.endswith("is not unspent on chain")
    assert "not the announced capacity" in g.offer(ann, FundingOutput(5, _out(ann).script)).why
    assert "2-of-2" in g.offer(ann, FundingOutput(ann.capacity, b"\x00\x14" + b"\x01" * 20)).why
    assert len(g) == 0
    assert g.offer(ann, _out(ann)).accepted and len(g) == 1
    assert g.offer(ann, _out(ann)).why == "stale"  # gossip of a known announcement stops here
    newer = _ann(1, KEYS[0], KEYS[1], p1=DEAR, seq=2)
    assert g.offer(newer, _out(newer)).accepted
    assert store.get(ann.channel_id) == newer
    moved = replace(_ann(1, KEYS[0], KEYS[1], seq=3), funding_vout=1).signed_by(KEYS[0]).signed_by(KEYS[1])
    assert "changes the outpoint" in g.offer(moved, _out(moved)).why
    # a restart from the store knows the channel; the watcher sees its funding spent
    g2 = Graph(store)
    assert g2.spent(ann.funding_txid, 0) and len(g2) == 0 and store.get(ann.channel_id) is None
    assert not g2.closed(ann.channel_id)


def _diamond(cap_bd: int = 1_000_000) -> list[Edge]:
    """A - B - D and A - C - D; through B is cheaper."""
    anns = [_ann(1, KEYS[0], KEYS[1]), _ann(2, KEYS[1], KEYS[3], cap=cap_bd),
            _ann(3, KEYS[0], KEYS[2], p2=DEAR), _ann(4, KEYS[2], KEYS[3], p1=DEAR)]
    g = Graph(MemoryGraphStore())
    for a in anns:
        assert g.offer(a, _out(a)).accepted
    return g.edges()


def test_the_cheapest_path_and_capacity() -> None:
    edges = _diamond()
    r = find_route(edges, A, D, 10_000, H, 18)
    assert r is not None and r.nodes == (B, D)
    r = find_route(_diamond(cap_bd=5_000), A, D, 10_000, H, 18)
    assert r is not None and r.nodes == (C, D)  # B-D cannot carry it
    assert find_route(edges, A, X, 10_000, H, 18) is None
    assert find_route(edges, A, D, 10_000, H, 18, exclude=[B, C]) is None


def test_retry_goes_around_the_failing_hop_and_the_penalty_fades() -> None:
    edges = _diamond()
    hist = History()
    first = find_route(edges, A, D, 10_000, H, 18, hist)
    assert first is not None and first.nodes == (B, D)
    second = retry(edges, A, D, 10_000, H, 18, hist, first, (0, W.Reason.INSUFFICIENT_BALANCE.value),
                   "insufficient_balance")
    assert second is not None and second.nodes == (C, D)
    assert hist.penalty(first.edges[1], H) == FAIL_PENALTY
    assert hist.penalty(first.edges[1], H + 3 * HALF_LIFE) == FAIL_PENALTY // 8
    later = find_route(edges, A, D, 10_000, H + 20 * HALF_LIFE, 18, hist)
    assert later is not None and later.nodes == (B, D)  # forgiven
    # a final failure at the payee: no retry
    assert retry(edges, A, D, 10_000, H, 18, hist, second, (1, W.Reason.UNKNOWN_PAYEE.value), "unknown_payee") is None


def test_a_diamond_payment_fails_through_b_and_the_retry_through_c_succeeds() -> None:
    """The whole payer loop in memory: graph -> route -> onion -> forwarders -> failure -> retry."""
    edges = _diamond()
    pre = b"\x55" * 32
    phash = hashlib.sha256(pre).digest()
    secret = b"\x66" * 32
    fws = {k.node_id.raw: W.Forwarder(k.x25519_private(), CHEAP if k.node_id.raw == B else DEAR, Margins())
           for k in KEYS[1:4]}
    balances = {(B, bytes([2]) * 32): 100, (C, bytes([4]) * 32): 1_000_000}  # B cannot pay D

    def chans(node: bytes) -> list[W.OutChannel]:
        return [W.OutChannel(e.channel, e.target, balances.get((node, e.channel), 0), e.locktime, e.escrow_delta)
                for e in edges if e.source == node]

    def payee(h: bytes) -> W.PayeeRequest | None:
        return W.PayeeRequest(pre, 10_000, secret, 18, False) if h == phash else None

    def none(h: bytes) -> W.PayeeRequest | None:
        return None

    def attempt(route: Route) -> tuple[bool, tuple[int, int] | None, str]:
        session = RNG.randbytes(32)
        packet = route_onion(route, session, phash, secret)
        amount, timeout = route.amounts[0], route.timeouts[0]
        prev, chan = A, route.edges[0].channel
        path: list[tuple[bytes, bytes]] = []  # (node, incoming channel)
        for e in route.edges:
            node = e.target
            inc = W.Incoming(chan, 1, prev, amount, phash, timeout, e.locktime)
            acts = fws[node].on_incoming(inc, packet, H, chans(node),
                                         payee if node == D else none)
            path.append((node, chan))
            fail = [a for a in acts if isinstance(a, W.FailUpstream)]
            if fail:
                blob, code = fail[0].failure, fail[0].reason
                for j in range(len(path) - 2, -1, -1):  # roll back towards the payer
                    up = fws[path[j][0]].on_downstream_failed(path[j + 1][1], 1, blob, code)
                    blob = [a for a in up if isinstance(a, W.FailUpstream)][0].failure
                return False, O.failure_read(route_secrets(route, session), blob), code
            if [a for a in acts if isinstance(a, W.FulfilUpstream)]:
                return True, None, ""
            offer = [a for a in acts if isinstance(a, W.OfferDownstream)][0]
            fws[node].on_offered(offer.name, offer.channel, 1)
            amount, timeout, packet, prev, chan = offer.amount, offer.timeout, offer.packet, node, offer.channel
        raise AssertionError("no answer")

    hist = History()
    route = find_route(edges, A, D, 10_000, H, 18, hist)
    assert route is not None and route.nodes == (B, D)
    ok, where, code = attempt(route)
    assert not ok and code == "insufficient_balance" and where == (0, W.Reason.INSUFFICIENT_BALANCE.value)
    route2 = retry(edges, A, D, 10_000, H, 18, hist, route, where, code)
    assert route2 is not None and route2.nodes == (C, D)
    ok, _, _ = attempt(route2)
    assert ok
    rec = next(iter(fws[C].records.values()))
    assert rec.fee == route2.fees[0] == DEAR.fee(route2.amounts[1], route2.timeouts[1] - H)


def test_a_channel_whose_lifetime_cannot_hold_the_timeouts_is_gone_around() -> None:
    """A - B - D is cheaper, but A-B's lifetime caps its escrow timeout below what B needs
    above B-D's nLockTime: the finder takes A - C - D."""
    anns = [_ann(1, KEYS[0], KEYS[1], lock=1500, life=1500), _ann(2, KEYS[1], KEYS[3], lock=1500),
            _ann(3, KEYS[0], KEYS[2], p2=DEAR), _ann(4, KEYS[2], KEYS[3], p1=DEAR)]
    g = Graph(MemoryGraphStore())
    for a in anns:
        assert g.offer(a, _out(a)).accepted
    r = find_route(g.edges(), A, D, 10_000, H, 18)
    assert r is not None and r.nodes == (C, D)
    assert all(t <= (e.max_timeout or t) for e, t in zip(r.edges, r.timeouts, strict=True))
    bad = replace(anns[0], locktime=1600).signed_by(KEYS[0]).signed_by(KEYS[1])
    assert "above its lifetime" in Graph(MemoryGraphStore()).offer(bad, _out(bad)).why
