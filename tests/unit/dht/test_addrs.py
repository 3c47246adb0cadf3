"""Signed contact addresses: a record verifies only for the key that signed it, any bit
flipped breaks it, the decoder gives a record or a ``MessageError`` for any bytes, the book keeps
the newest verified record per key within its bound, and the dial budget caps dials."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.dht import addrs
from eschaton.core.dht.errors import MessageError
from eschaton.core.link.identity import NodeKeys

KEYS = NodeKeys.generate(random.Random(3).randbytes)
OTHER = NodeKeys.generate(random.Random(4).randbytes)


def rec(seq: int = 1, keys: NodeKeys = KEYS, urls: tuple[str, ...] = ("tcp://10.0.0.1:9735",)) -> bytes:
    return addrs.encode(addrs.sign(keys.sign, keys.node_id.raw, urls, seq))


def test_sign_verify_and_forgery() -> None:
    r = addrs.decode(rec())
    assert r.verify() and r.urls == ("tcp://10.0.0.1:9735",)
    forged = addrs.AddrRecord(OTHER.node_id.raw, r.seq, r.urls, r.sig)  # another key, same sig
    assert not forged.verify()
    moved = addrs.AddrRecord(r.key, r.seq, ("tcp://10.6.6.6:9735",), r.sig)
    assert not moved.verify()
    for bad in (("udp://h:1",), ("tcp://h",), ("tcp://:5",), ("tcp://h:1/x",), ("x" * 300,)):
        with pytest.raises(MessageError):
            addrs.sign(KEYS.sign, KEYS.node_id.raw, bad, 1)


def test_any_single_bit_flip_is_refused() -> None:
    data = rec()
    book = addrs.AddrBook()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        assert book.learn(bytes(flipped)) is None, i
    assert len(book) == 0 and book.bad == len(data) * 8


def test_book_keeps_newest_and_is_bounded() -> None:
    book = addrs.AddrBook(max_entries=2)
    assert book.learn(rec(5)) is not None
    assert book.learn(rec(4)) is None  # older: ignored
    assert book.learn(rec(6, urls=("tcp://10.0.0.2:1",))) is not None
    got = book.get(KEYS.node_id.raw)
    assert got is not None and got.seq == 6 and got.urls == ("tcp://10.0.0.2:1",)
    third = NodeKeys.generate(random.Random(5).randbytes)
    book.learn(rec(1, OTHER))
    book.learn(rec(1, third))
    assert len(book) == 2 and book.get(KEYS.node_id.raw) is None  # the oldest learned went


def test_dial_budget() -> None:
    b = addrs.DialBudget(in_flight=2, per_minute=3)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)  # two in flight
    b.done()
    assert b.take(0.0)  # the third token
    b.done()
    b.done()
    assert not b.take(1.0)  # tokens spent: one comes back every 20 s
    assert b.take(21.0)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_never_crashes(data: bytes) -> None:
    try:
        addrs.decode(data)
    except MessageError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([b"key", b"seq", b"urls", b"sig", b"x"]),
                       st.one_of(st.binary(max_size=70), st.integers(-5, 2**64),
                                 st.lists(st.binary(max_size=40), max_size=6)), max_size=5))
def test_structured_garbage_is_a_typed_error(d: dict[bytes, object]) -> None:
    from eschaton.core.wire import bencode

    try:
        data = bencode.encode(d)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - hypothesis built something bencode cannot hold
        return
    book = addrs.AddrBook()
    assert book.learn(data) is None or book.get(d.get(b"key", b"")) is not None  # type: ignore[arg-type]
