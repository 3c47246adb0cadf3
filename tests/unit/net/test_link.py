"""Link security: authentication, replay/tamper rejection, version negotiation, keepalive; unknown
ids (odd ignored, even closes) and the feature gate on sending."""
from __future__ import annotations

import pytest

from eschaton.core.link.errors import (
    DecryptError,
    HandshakeError,
    LinkStateError,
    LinkTimeout,
    PeerLacksService,
    PeerMismatch,
    PeerSentError,
    ProtocolViolation,
    VersionMismatch,
)
from eschaton.core.link.identity import NodeId
from eschaton.core.link.link import (
    HandshakeComplete,
    Link,
    LinkClosed,
    LinkConfig,
    LinkOpen,
    LinkState,
    MessageIgnored,
    MessageReceived,
    PongReceived,
    Role,
    choose_version,
)
from eschaton.core.wire import bencode, make
from eschaton.core.wire.messages import SERVICE

from .helpers import eph, keys, pair, pump

A, B, C = keys("alice"), keys("bob"), keys("carol")
CHANNELS = LinkConfig(features=frozenset({SERVICE["channel"].feature}))


def closed(events) -> LinkClosed:
    found = [e for e in events if isinstance(e, LinkClosed)]
    assert len(found) == 1, events
    return found[0]


def open_pair(**kw):
    la, lb = pair(A, B, **kw)
    ev_a, ev_b = pump(la, lb)
    assert la.is_open and lb.is_open, (ev_a, ev_b)
    return la, lb, ev_a, ev_b


def test_handshake_authenticates_both_ends_and_opens() -> None:
    la, lb, ev_a, ev_b = open_pair(cfg_a=LinkConfig(name="alice", features=frozenset({1, 5, 201})))
    assert HandshakeComplete(B.node_id, 1) in ev_a
    assert HandshakeComplete(A.node_id, 1) in ev_b
    assert la.remote == B.node_id and lb.remote == A.node_id
    opened = [e for e in ev_b if isinstance(e, LinkOpen)][0]
    assert opened.name == "alice" and opened.features == {1, 5, 201}  # unknown bits kept
    assert lb.peer_runs("channel") and lb.peer_runs("echo") and not lb.peer_runs("microgrid")
    assert la.peer_features == frozenset() and la.peer_runs("link")


def test_messages_flow_both_ways_in_order() -> None:
    la, lb, _, _ = open_pair(cfg_a=CHANNELS, cfg_b=CHANNELS)
    for v in range(5):
        la.send(make("update_ack", channel_id=bytes(32), body=b'{"n":%d}' % v))
    lb.send(make("turn_grant", channel_id=b"\x01" * 32, body=b'{"number":9}'))
    ev_a, ev_b = pump(la, lb)
    assert [e.message.get_bytes("body") for e in ev_b if isinstance(e, MessageReceived)] == [
        b'{"n":%d}' % v for v in range(5)]
    got = [e.message for e in ev_a if isinstance(e, MessageReceived)]
    assert got[0].name == "turn_grant" and got[0].get_bytes("channel_id") == b"\x01" * 32
    assert got[0].get_bytes("body") == b'{"number":9}'


def test_largest_channel_message_crosses_the_link() -> None:
    la, lb, _, _ = open_pair(cfg_b=CHANNELS)
    body = b'{"pad":"' + b"x" * (60_000 - 10) + b'"}'
    assert len(body) == 60_000  # the wire's bound for a channel body
    la.send(make("update", channel_id=bytes(32), body=body))
    _, ev_b = pump(la, lb)
    got = [e.message for e in ev_b if isinstance(e, MessageReceived)]
    assert [m.get_bytes("body") for m in got] == [body] and lb.is_open


def test_responder_with_other_key_cannot_answer() -> None:
    """A expects B, but C sits at the address: C cannot even decrypt message 1."""
    la = Link(A, Role.INITIATOR, now=0, ephemeral=eph("a"), remote=B.node_id)
    lc = Link(C, Role.RESPONDER, now=0, ephemeral=eph("c"))
    la.start()
    lc.start()
    ev_a, ev_c = pump(la, lc)
    err = closed(ev_c).error
    assert isinstance(err, HandshakeError)
    assert lc.is_closed and not la.is_open
    # A hears nothing back; when the connection drops it reports a handshake failure.
    assert isinstance(closed(la.connection_lost(2.0)).error, HandshakeError)


def test_responder_refuses_unexpected_initiator() -> None:
    lc = Link(C, Role.INITIATOR, now=0, ephemeral=eph("c"), remote=B.node_id)
    lb = Link(B, Role.RESPONDER, now=0, ephemeral=eph("b"), remote=A.node_id)
    lc.start()
    lb.start()
    ev_c, ev_b = pump(lc, lb)
    err = closed(ev_b).error
    assert isinstance(err, PeerMismatch) and "expected node" in str(err)
    assert not lb.is_open
    # B told C why (an encrypted error message), and C closed too.
    assert isinstance(closed(ev_c).error, PeerSentError)


class _Impostor:
    """Carol's static key, claiming Alice's node id (an attacker, not a mock of our code)."""

    def __init__(self) -> None:
        self.node_id = A.node_id

    def x25519_private(self) -> bytes:
        return C.x25519_private()


def test_peer_claiming_anothers_id_is_refused() -> None:
    li = Link(_Impostor(), Role.INITIATOR, now=0, ephemeral=eph("i"), remote=B.node_id)  # type: ignore[arg-type]
    lb = Link(B, Role.RESPONDER, now=0, ephemeral=eph("b"))
    li.start()
    lb.start()
    _, ev_b = pump(li, lb)
    err = closed(ev_b).error
    assert isinstance(err, PeerMismatch) and "holds another key" in str(err)


def test_replayed_frame_is_rejected_and_link_closed() -> None:
    la, lb, _, _ = open_pair()
    la.send(make("ping", nonce=1))
    frame = la.data_to_send()[0]
    assert lb.receive_frame(frame, 2.0) == []  # the genuine frame: answered with pong
    ev = lb.receive_frame(frame, 2.0)  # the same bytes again
    assert isinstance(closed(ev).error, DecryptError)
    assert lb.state is LinkState.CLOSED
    assert lb.receive_frame(frame, 2.0) == []  # closed links ignore everything


def test_tampered_frame_is_rejected_and_link_closed() -> None:
    la, lb, _, _ = open_pair()
    la.send(make("warning", code=1, message="hello"))
    frame = bytearray(la.data_to_send()[0])
    frame[len(frame) // 2] ^= 0x01
    assert isinstance(closed(lb.receive_frame(bytes(frame), 2.0)).error, DecryptError)


def test_reordered_frames_are_rejected() -> None:
    la, lb, _, _ = open_pair()
    la.send(make("ping", nonce=1))
    la.send(make("ping", nonce=2))
    first, second = la.data_to_send()
    assert isinstance(closed(lb.receive_frame(second, 2.0)).error, DecryptError)


def test_tampered_handshake_is_rejected() -> None:
    la, lb = pair(A, B)
    msg1 = bytearray(la.data_to_send()[0])
    msg1[-1] ^= 0x80
    assert isinstance(closed(lb.receive_frame(bytes(msg1), 1.0)).error, HandshakeError)


def _raw(link: Link, type_id: int, body: dict) -> None:
    """White-box: queue a message with any type id, as a newer (or buggy) peer would send it."""
    link._out.frames.append(bytes(link._noise.encrypt(type_id.to_bytes(2, "big") + bencode.encode(body))))


def test_unknown_odd_id_is_ignored_and_the_link_stays() -> None:
    la, lb, _, _ = open_pair()
    _raw(la, 0x7FFF, {"anything": b"a newer peer's message"})
    la.ping(1.0)
    ev_a, ev_b = pump(la, lb)
    assert MessageIgnored(0x7FFF) in ev_b
    assert la.is_open and lb.is_open
    assert any(isinstance(e, PongReceived) for e in ev_a)  # and what came after it still flows


def test_unknown_even_id_closes_the_link_with_one_line_naming_it() -> None:
    la, lb, _, _ = open_pair()
    _raw(la, 0x7FFE, {"anything": b"x"})
    ev_a, ev_b = pump(la, lb)
    err = closed(ev_b).error
    assert isinstance(err, ProtocolViolation) and "32766" in str(err) and "even" in str(err)
    assert "\n" not in str(err)
    assert isinstance(closed(ev_a).error, PeerSentError)  # the peer is told why


def test_malformed_known_odd_message_still_closes_the_link() -> None:
    """Odd means "may be ignored if unknown", not "may be garbage": warning (id 1) is known."""
    la, lb, _, _ = open_pair()
    _raw(la, 1, {"code": 1})  # warning without its required message field
    ev_a, ev_b = pump(la, lb)
    assert isinstance(closed(ev_b).error, ProtocolViolation)
    assert "malformed" in str(closed(ev_b).error)


def test_messages_of_a_service_the_peer_did_not_announce_are_not_sent() -> None:
    la, lb, _, _ = open_pair(cfg_b=LinkConfig(features=frozenset({SERVICE["echo"].feature})))
    with pytest.raises(PeerLacksService, match="does not run the channel service"):
        la.send(make("update", channel_id=bytes(32), body=b'{"n":1}'))
    assert not la.has_data_to_send  # nothing queued
    la.send(make("echo_request", nonce=1, payload=b"hi"))  # a service it announced
    la.send(make("ping", nonce=1))  # link control: always
    ev_a, ev_b = pump(la, lb)
    assert [e.message.name for e in ev_b if isinstance(e, MessageReceived)] == ["echo_request"]
    with pytest.raises(PeerLacksService, match="microgrid"):  # B's own view of A: nothing announced
        lb.send(make("mg_refused", meter_id="m", reason="r", detail="d"))


def test_well_encrypted_garbage_is_a_protocol_violation_with_error_sent() -> None:
    la, lb, _, _ = open_pair()
    la._out.frames.append(bytes(la._noise.encrypt(b"\x00\x04garbage")))  # white-box: a buggy peer
    ev_a, ev_b = pump(la, lb)
    assert isinstance(closed(ev_b).error, ProtocolViolation)
    assert isinstance(closed(ev_a).error, PeerSentError)  # the error message reached A


@pytest.mark.parametrize("ours,theirs,expected", [
    ((1, 2, 3), (2, 3, 5), 3), ((1,), (1,), 1), ((7, 2), (2, 9, 7), 7), ((1, 2), (3,), None),
])
def test_choose_version(ours, theirs, expected) -> None:
    assert choose_version(ours, theirs) == expected


def test_version_negotiation_picks_highest_common() -> None:
    la, lb = pair(A, B, cfg_a=LinkConfig(versions=(1, 2, 3)), cfg_b=LinkConfig(versions=(2, 3, 5)))
    ev_a, ev_b = pump(la, lb)
    assert la.is_open and lb.is_open
    assert la.version == lb.version == 3


def test_version_negotiation_refuses_disjoint_sets_on_both_sides() -> None:
    la, lb = pair(A, B, cfg_a=LinkConfig(versions=(1, 2)), cfg_b=LinkConfig(versions=(3, 4)))
    ev_a, ev_b = pump(la, lb)
    for ev in (ev_a, ev_b):
        err = closed(ev).error
        assert isinstance(err, VersionMismatch)
        assert "no common protocol version" in str(err)
    assert "[1, 2]" in str(closed(ev_a).error) and "[3, 4]" in str(closed(ev_a).error)


def test_keepalive_pings_and_times_out() -> None:
    cfg = LinkConfig(ping_interval=30, pong_timeout=10)
    la, lb = pair(A, B, cfg_a=cfg, cfg_b=cfg)
    pump(la, lb, now=1.0)
    assert la.next_deadline() == 31.0
    assert la.handle_timer(31.0) == []
    ping = la.data_to_send()
    assert len(ping) == 1
    lb.receive_frame(ping[0], 31.5)
    ev = la.receive_frame(lb.data_to_send()[0], 32.0)
    assert ev == [PongReceived(1, 1.0)]
    # Now B goes silent.
    assert la.handle_timer(62.0) == [] and la.data_to_send()
    assert la.next_deadline() == 72.0
    assert isinstance(closed(la.handle_timer(72.0)).error, LinkTimeout)


def test_handshake_timeout() -> None:
    la, lb = pair(A, B, cfg_a=LinkConfig(handshake_timeout=5))
    la.data_to_send()  # message 1 lost
    assert la.handle_timer(4.9) == []
    assert isinstance(closed(la.handle_timer(5.0)).error, LinkTimeout)


def test_send_before_open_is_a_local_error() -> None:
    la, _ = pair(A, B)
    with pytest.raises(LinkStateError):
        la.send(make("ping", nonce=1))
    with pytest.raises(LinkStateError):
        Link(A, Role.INITIATOR, now=0, ephemeral=eph("x"))  # initiator must know whom it dials


def test_node_id_rules() -> None:
    raw = bytearray(A.node_id.raw)
    raw[31] |= 0x80  # the same X25519 key, other sign: refused so one key has one id
    with pytest.raises(Exception) as exc:
        NodeId(bytes(raw))
    assert "canonical" in str(exc.value)
    assert NodeId.from_hex(A.node_id.hex()) == A.node_id
    assert A.seed().hex() not in repr(A) and A.seed().hex() not in str(A)
