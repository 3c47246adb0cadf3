"""The onion: each hop reads its own layer only, a tampered packet is refused, the size never changes."""
from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.link.identity import NodeKeys
from eschaton.core.routing import onion as O


def _keys(n: int, seed: int = 1) -> list[NodeKeys]:
    rng = random.Random(seed)
    return [NodeKeys.generate(rng.randbytes) for _ in range(n)]


def _route(keys: list[NodeKeys], secret: bytes = b"\x07" * 32) -> list[tuple[bytes, O.HopPayload]]:
    n = len(keys)
    hops = []
    for i, k in enumerate(keys):
        final = i == n - 1
        nxt = secret if final else keys[i + 1].node_id.raw
        hops.append((k.node_id.x25519(), O.HopPayload(final, nxt, 10_000 - 7 * i, 900 - 40 * i)))
    return hops


HASH = hashlib.sha256(b"preimage").digest()
SESSION = b"\x42" * 32


@pytest.mark.parametrize("n", [1, 2, 5, O.MAX_HOPS])
def test_every_hop_reads_its_own_instructions_and_the_size_is_constant(n: int) -> None:
    keys = _keys(n)
    hops = _route(keys)
    packet = O.build(SESSION, hops, HASH)
    seen = []
    for i, k in enumerate(keys):
        assert len(packet) == O.PACKET_LEN
        peeled = O.peel(packet, k.x25519_private(), HASH)
        assert peeled.payload == hops[i][1]
        seen.append(peeled.payload)
        if i < n - 1:
            assert peeled.next_packet is not None
            packet = peeled.next_packet
        else:
            assert peeled.next_packet is None
    assert seen[-1].final and seen[-1].next_node == b"\x07" * 32
    assert not any(p.final for p in seen[:-1])


def test_a_hop_cannot_read_beyond_its_layer() -> None:
    keys = _keys(5)
    hops = _route(keys)
    packet = O.build(SESSION, hops, HASH)
    first = O.peel(packet, keys[0].x25519_private(), HASH)
    assert first.next_packet is not None
    # hop 0 holding the packet it forwards cannot open the next layer with its own key
    with pytest.raises(O.BadOnion, match="HMAC"):
        O.peel(first.next_packet, keys[0].x25519_private(), HASH)
    # nor does any later hop's payload appear in clear in what hop 0 sees or forwards
    for _, payload in hops[1:]:
        enc = payload.encode()
        assert enc[1:41] not in packet and enc[1:41] not in first.next_packet
    # the ephemeral key changes at every hop: two hops cannot link a packet by its key
    assert packet[1:33] != first.next_packet[1:33]
    # a later hop cannot open an earlier hop's layer
    with pytest.raises(O.BadOnion):
        O.peel(packet, keys[1].x25519_private(), HASH)


def test_a_route_of_one_hop_and_a_route_of_five_look_alike_to_the_first_hop() -> None:
    short = O.build(SESSION, _route(_keys(1)), HASH)
    long = O.build(SESSION, _route(_keys(5)), HASH)
    assert len(short) == len(long) == O.PACKET_LEN


@pytest.mark.parametrize("where", [0, 1, 20, 33, 33 + 47, 33 + O.FRAME + 3, O.PACKET_LEN - 40, O.PACKET_LEN - 1])
def test_a_tampered_packet_is_refused(where: int) -> None:
    keys = _keys(3)
    packet = bytearray(O.build(SESSION, _route(keys), HASH))
    packet[where] ^= 0x01
    with pytest.raises(O.BadOnion):
        O.peel(bytes(packet), keys[0].x25519_private(), HASH)


def test_tampering_with_a_later_layer_is_caught_by_that_hop() -> None:
    keys = _keys(3)
    packet = O.build(SESSION, _route(keys), HASH)
    nxt = bytearray(O.peel(packet, keys[0].x25519_private(), HASH).next_packet or b"")
    nxt[200] ^= 0x80  # hop 0 (or the link after it) alters what hop 1 gets
    with pytest.raises(O.BadOnion, match="HMAC"):
        O.peel(bytes(nxt), keys[1].x25519_private(), HASH)


def test_an_onion_is_bound_to_its_payment_hash() -> None:
    keys = _keys(2)
    packet = O.build(SESSION, _route(keys), HASH)
    with pytest.raises(O.BadOnion, match="HMAC"):
        O.peel(packet, keys[0].x25519_private(), hashlib.sha256(b"other").digest())


def test_bad_lengths_and_versions_are_one_line_refusals() -> None:
    k = _keys(1)[0]
    with pytest.raises(O.BadOnion, match="expected 1665"):
        O.peel(b"\0" * 10, k.x25519_private(), HASH)
    packet = bytearray(O.build(SESSION, _route([k]), HASH))
    packet[0] = 9
    with pytest.raises(O.BadOnion, match="version 9"):
        O.peel(bytes(packet), k.x25519_private(), HASH)
    with pytest.raises(ValueError):
        O.build(SESSION, _route(_keys(O.MAX_HOPS + 1)), HASH)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=O.PACKET_LEN + 2))
def test_fuzz_peel_refuses_garbage_with_bad_onion_only(raw: bytes) -> None:
    k = _keys(1)[0]
    with pytest.raises(O.BadOnion):
        O.peel(raw, k.x25519_private(), HASH)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, O.PACKET_LEN - 1), st.integers(1, 255))
def test_fuzz_any_single_byte_change_is_refused(where: int, flip: int) -> None:
    keys = _keys(2)
    packet = bytearray(O.build(SESSION, _route(keys), HASH))
    packet[where] ^= flip
    with pytest.raises(O.BadOnion):
        O.peel(bytes(packet), keys[0].x25519_private(), HASH)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=O.PAYLOAD_LEN, max_size=O.PAYLOAD_LEN))
def test_fuzz_payload_decoder_round_trips_or_refuses(raw: bytes) -> None:
    try:
        p = O.HopPayload.decode(raw)
    except O.BadOnion:
        return
    assert p.encode() == raw


def test_a_failure_is_read_by_the_payer_only_and_names_the_failing_hop() -> None:
    keys = _keys(4)
    hop_keys = [k.node_id.x25519() for k in keys]
    secrets = O.failure_secrets(SESSION, hop_keys)
    # hop 2 fails; hops 1 and 0 add their layers on the way back
    peeled_secrets = []
    packet = O.build(SESSION, _route(keys), HASH)
    for k in keys:
        p = O.peel(packet, k.x25519_private(), HASH)
        peeled_secrets.append(p.shared_secret)
        packet = p.next_packet or b""
    assert peeled_secrets == secrets
    blob = O.failure_create(secrets[2], 6)
    for j in (1, 0):
        blob = O.failure_forward(secrets[j], blob)
    assert len(blob) == O.FAILURE_LEN
    assert O.failure_read(secrets, blob) == (2, 6)
    tampered = bytes([blob[0] ^ 1]) + blob[1:]
    assert O.failure_read(secrets, tampered) is None
    assert O.failure_read(secrets, b"short") is None
