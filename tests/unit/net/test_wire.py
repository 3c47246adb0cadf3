"""The message table, the message codec and handler dispatch."""
from __future__ import annotations

import pytest

from eschaton.core.wire import (
    BY_ID,
    MESSAGES,
    EncodeError,
    FieldError,
    Message,
    UnhandledMessage,
    UnknownMessage,
    WireError,
    bencode,
    decode_message,
    dispatch,
    encode_message,
    make,
)
from eschaton.core.wire.fields import Bytes, ListOf, MapOf, Scalar, Text, UInt

REQUIRED = {"init", "ping", "pong", "error", "warning", "open_channel", "accept_channel",
            "funding_created", "funding_signed", "channel_ready", "update", "update_ack",
            "escrow_add", "escrow_settle", "close_request", "close_signed", "channel_reestablish"}


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
    names = {m.name for m in MESSAGES}
    assert REQUIRED <= names
    assert len({m.type_id for m in MESSAGES}) == len(MESSAGES)
    update = {f.name for f in BY_ID[37].fields}
    assert {"version", "nlocktime", "fee_sat", "balances", "signature"} <= update
    assert {f.name for f in BY_ID[40].fields} >= {"preimage"}


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


def test_strict_decoding() -> None:
    good = encode_message(make("ping", nonce=7))
    assert decode_message(good) == Message("ping", {"nonce": 7})
    with pytest.raises(UnknownMessage):
        decode_message(b"\xff\xf0" + good[2:])
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
    with pytest.raises(FieldError):
        decode_message(encode_message(make("update", channel_id=bytes(32), version=1,
                                           nlocktime=1, fee_sat=1, balances={},
                                           signature=bytes(64)))[:2]
                       + bencode.encode({"channel_id": bytes(32), "version": 1, "nlocktime": 1,
                                         "fee_sat": 1, "balances": {"BAD KEY": 1},
                                         "signature": bytes(64)}))


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


class Handler:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_update(self, msg: Message) -> str:
        self.seen.append(msg.name)
        return "handled"


class Fallback(Handler):
    def on_unhandled(self, msg: Message) -> str:
        return "fallback:" + msg.name


def test_dispatch_to_on_message_handlers() -> None:
    h = Handler()
    upd = make("update", channel_id=bytes(32), version=3, nlocktime=0, fee_sat=0,
               balances={"a": 1}, signature=bytes(64))
    assert dispatch(h, decode_message(encode_message(upd))) == "handled"
    assert h.seen == ["update"]
    with pytest.raises(UnhandledMessage):
        dispatch(h, make("ping", nonce=1))
    assert dispatch(Fallback(), make("ping", nonce=1)) == "fallback:ping"


def test_docs_table_matches_code() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "network.md").read_text()
    for m in MESSAGES:
        fs = ", ".join(f"`{f.name}{'?' if f.optional else ''}`: {f.type.describe()}" for f in m.fields)
        assert f"| {m.type_id} | `{m.name}` | {fs} |" in doc, f"docs/network.md is stale for {m.name}"
