"""The message table (rows, services, id parity, feature bits) and the message codec."""
from __future__ import annotations

import pytest

from eschaton.core.wire import (
    BY_ID,
    MESSAGES,
    EncodeError,
    FieldError,
    Message,
    UnknownMessage,
    WireError,
    bencode,
    decode_message,
    encode_message,
    make,
)
from eschaton.core.wire.features import decode_features, encode_features
from eschaton.core.wire.fields import Bytes, ListOf, MapOf, Scalar, Text, UInt
from eschaton.core.wire.messages import SERVICE, SERVICE_OF, SERVICES, ignorable

LINK_CONTROL = {"init", "ping", "pong", "error", "warning"}
# The channel core's messages, in type-id order: the even ids from 32.
CHANNEL_ROWS = ("open_channel", "accept_channel", "refund_signature", "funding_signatures",
                "channel_ready", "update", "update_ack", "mutual_propose", "mutual_sign",
                "close_proposal", "close_accept", "reestablish", "turn_request", "turn_grant",
                "channel_error", "reanchor_propose", "reanchor_refund", "reanchor_anchor")
# Optional channel rows (odd ids from 67): a peer that predates them ignores them.
CHANNEL_ODD_ROWS = ("escrow_fulfil", "escrow_fail")


def upd(body: bytes = b'{"n":1}', cid: bytes = bytes(32)) -> Message:
    return make("update", channel_id=cid, body=body)


def sample(t) -> object:
    """The largest value a field type allows (exercises the limits)."""
    if isinstance(t, UInt):
        return t.limit
    if isinstance(t, Bytes):
        return b"\xab" * t.max_len
    if isinstance(t, Text):
        return "é" * (t.max_len // 2)
    if isinstance(t, Scalar):
        return b"s" * t.max_len
    if isinstance(t, ListOf):
        return [sample(t.item)] * t.max_items
    if isinstance(t, MapOf):
        return {f"k{i}": sample(t.value) for i in range(t.max_items)}
    raise AssertionError(t)


def test_table_declares_every_required_message_with_limits() -> None:
    names = {m.name for m in MESSAGES if m.type_id < 128}  # 128+: microgrid and echo rows
    assert LINK_CONTROL | set(CHANNEL_ROWS) | set(CHANNEL_ODD_ROWS) == names
    assert len({m.type_id for m in MESSAGES}) == len(MESSAGES)
    assert all(m.type_id < 32 for m in MESSAGES if m.name in LINK_CONTROL)
    rows = [(32 + 2 * i, n) for i, n in enumerate(CHANNEL_ROWS)] + \
        [(67 + 2 * i, n) for i, n in enumerate(CHANNEL_ODD_ROWS)]
    for type_id, name in rows:
        spec = BY_ID[type_id]
        assert spec.name == name
        # Exactly a channel id and a bounded body: the channel core owns the rest.
        assert [(f.name, f.type, f.optional) for f in spec.fields] == [
            ("channel_id", Bytes(max_len=32, min_len=32), False),
            ("body", Bytes(max_len=60_000, min_len=2), False),
        ]


def test_channel_rows_are_the_channel_cores_messages() -> None:
    from eschaton.core.channel import messages as channel_messages

    core = {cls.NAME for cls in vars(channel_messages).values()
            if isinstance(cls, type) and issubclass(cls, channel_messages.Message)
            and cls is not channel_messages.Message}
    assert core == {m.name for m in MESSAGES if SERVICE_OF[m.name].name == "channel"}


def test_largest_channel_message_fits_one_noise_message() -> None:
    wire = encode_message(upd(b"{" + b"x" * 59_998 + b"}"))
    assert len(wire) <= 65_535 - 16  # Noise's maximum minus its tag
    assert decode_message(wire) == upd(b"{" + b"x" * 59_998 + b"}")


@pytest.mark.parametrize("spec", MESSAGES, ids=lambda s: s.name)
def test_every_message_round_trips_at_its_limits(spec) -> None:
    fields = {f.name: sample(f.type) for f in spec.fields}
    msg = make(spec.name, **fields)
    wire = encode_message(msg)
    assert decode_message(wire) == msg
    assert wire[:2] == spec.type_id.to_bytes(2, "big")


@pytest.mark.parametrize("spec", MESSAGES, ids=lambda s: s.name)
def test_every_field_limit_is_enforced_on_decode(spec) -> None:
    base = {f.name: sample(f.type) for f in spec.fields}
    for f in spec.fields:
        over = dict(base)
        t = f.type
        if isinstance(t, UInt):
            over[f.name] = t.limit + 1
        elif isinstance(t, Bytes | Scalar):
            over[f.name] = b"x" * ((t.max_len) + 1)
        elif isinstance(t, Text):
            over[f.name] = "x" * (t.max_len + 1)
        elif isinstance(t, ListOf | MapOf):
            continue  # covered below
        # Encode bypassing the table check, as a hostile peer would.
        wire = spec.type_id.to_bytes(2, "big") + bencode.encode(over)
        with pytest.raises(FieldError):
            decode_message(wire)
        with pytest.raises(EncodeError):
            make(spec.name, **over)
        if isinstance(t, Bytes) and t.min_len > 0:  # and one byte short of the minimum
            under = dict(base, **{f.name: b"x" * (t.min_len - 1)})
            with pytest.raises(FieldError):
                decode_message(spec.type_id.to_bytes(2, "big") + bencode.encode(under))
            with pytest.raises(EncodeError):
                make(spec.name, **under)


def test_list_and_map_limits() -> None:
    """ListOf and MapOf (no channel row uses a map any more, the types remain) refuse overflow."""
    features = ListOf(Text(32), 64)
    assert features.parse([b"a"] * 64, "f") == ["a"] * 64
    with pytest.raises(FieldError):
        features.parse([b"a"] * 65, "f")
    with pytest.raises(EncodeError):
        features.check(["a"] * 65, "f")
    params = MapOf(Scalar(256), max_items=16)
    assert params.parse({b"tariff": 5, b"m": b"x"}, "p") == {"tariff": 5, "m": b"x"}
    with pytest.raises(FieldError):
        params.parse({b"BAD KEY": 1}, "p")
    with pytest.raises(EncodeError):
        params.check({"BAD KEY": 1}, "p")
    with pytest.raises(FieldError):
        params.parse({f"k{i}".encode(): 1 for i in range(17)}, "p")
    with pytest.raises(FieldError):
        params.parse({b"k": b"x" * 257}, "p")
    with pytest.raises(FieldError):
        params.parse({b"k": 2**64}, "p")


def test_strict_decoding() -> None:
    good = encode_message(make("ping", nonce=7))
    assert decode_message(good) == Message("ping", {"nonce": 7})
    with pytest.raises(UnknownMessage) as unknown:
        decode_message(b"\xff\xf1" + b"garbage, never read")
    assert unknown.value.type_id == 0xFFF1  # told apart from a malformed known message:
    with pytest.raises(FieldError):  # unknown field
        decode_message(good[:2] + bencode.encode({"nonce": 7, "zzz": 1}))
    with pytest.raises(FieldError):  # missing field
        decode_message(good[:2] + bencode.encode({}))
    with pytest.raises(FieldError):  # wrong type
        decode_message(good[:2] + bencode.encode({"nonce": b"7"}))
    with pytest.raises(WireError):  # non-canonical body
        decode_message(good[:2] + b"d5:noncei07ee")
    with pytest.raises(WireError):
        decode_message(good + b"x")
    with pytest.raises(WireError):
        decode_message(b"\x00")
    good_upd = encode_message(upd())
    assert decode_message(good_upd) == upd()
    with pytest.raises(FieldError):  # channel id one byte short
        decode_message(good_upd[:2] + bencode.encode({"body": b'{"n":1}', "channel_id": bytes(31)}))
    with pytest.raises(FieldError):  # body as an integer, not bytes
        decode_message(good_upd[:2] + bencode.encode({"body": 1, "channel_id": bytes(32)}))
    with pytest.raises(FieldError):  # body missing
        decode_message(good_upd[:2] + bencode.encode({"channel_id": bytes(32)}))


def test_make_refuses_unknown_and_missing() -> None:
    with pytest.raises(EncodeError):
        make("nope")
    with pytest.raises(EncodeError):
        make("ping")
    with pytest.raises(EncodeError):
        make("ping", nonce=1, extra_field=2)
    with pytest.raises(EncodeError):
        make("ping", nonce=-1)
    with pytest.raises(EncodeError):
        make("ping", nonce=True)


def test_services_own_disjoint_ranges_and_every_row() -> None:
    assert [s.name for s in SERVICES] == ["link", "channel", "microgrid", "echo", "stamp", "routing", "dht"]
    for m in MESSAGES:
        assert [s.name for s in SERVICES if s.owns(m.type_id)] == [SERVICE_OF[m.name].name]
    assert {m.name for m in MESSAGES if SERVICE_OF[m.name].name == "link"} == LINK_CONTROL
    assert {m.name for m in MESSAGES if SERVICE_OF[m.name].name == "microgrid"} == {
        "mg_offer", "mg_accept", "mg_invoice", "mg_paid", "mg_refused", "mg_ask", "mg_request"}
    bits = [s.feature for s in SERVICES if s.feature is not None]
    assert SERVICE["link"].feature is None and len(set(bits)) == len(bits) == 6
    assert all(b % 2 == 1 for b in bits)  # optional services: odd bits, as in BOLT #9


def test_id_parity_says_what_a_receiver_may_ignore() -> None:
    """Even: the receiver must understand it (link control, channels, microgrid). Odd: a peer
    may ignore it (warning, the echo, stamp, routing and DHT services' rows, the payee's escrow fulfil
    and fail, the microgrid's requests for sales paid through the network)."""
    odd = {m.name for m in MESSAGES if ignorable(m.type_id)}
    assert odd == {"warning", "echo_request", "echo_reply", "escrow_fulfil", "escrow_fail",
                   "stamp_submit", "stamp_proof", "stamp_quote_req", "stamp_quote", "stamp_paid_submit",
                   "stamp_answer", "dht_find_node", "dht_nodes", "dht_find_value",
                   "dht_values", "dht_store", "dht_stored", "dht_refused", "route_onion", "route_fail",
                   "route_sign", "route_announce", "mg_ask", "mg_request",
                   "dht_query", "dht_quote", "dht_answer", "dht_paid", "dht_addrs"}
    assert ignorable(0xFFF1) and not ignorable(0xFFF0)


def test_feature_bitfields() -> None:
    assert encode_features([]) == b""
    assert encode_features([0]) == b"\x01" and encode_features([1, 3, 5]) == b"\x2a"
    assert encode_features([8]) == b"\x01\x00"  # big-endian: bit 8 is in the first byte
    assert decode_features(b"\x00\x00\x2a") == {1, 3, 5}  # leading zero bytes accepted
    assert decode_features(encode_features([1, 200, 255])) == {1, 200, 255}
    with pytest.raises(EncodeError):
        encode_features([256])  # beyond the field's 32 bytes
    with pytest.raises(FieldError):  # a bitfield over the limit in a real init
        decode_message(encode_message(make("init", features=b""))[:2]
                       + bencode.encode({"features": b"\x01" * 33}))


def test_docs_table_matches_code() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "network.md").read_text()
    for m in MESSAGES:
        fs = ", ".join(f"`{f.name}{'?' if f.optional else ''}`: {f.type.describe()}" for f in m.fields)
        assert f"| {m.type_id} | `{m.name}` | {fs} |" in doc, f"docs/network.md is stale for {m.name}"
    for svc in SERVICES:
        bit = svc.feature if svc.feature is not None else "-"
        assert f"| `{svc.name}` | {svc.first_id}-{svc.last_id} | {bit} |" in doc, \
            f"docs/network.md is stale for the {svc.name} service"
