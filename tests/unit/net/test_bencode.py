"""Canonical bencode: round trips, and every non-canonical form refused."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.wire import bencode
from eschaton.core.wire.errors import BencodeError, EncodeError

values = st.recursive(
    st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=8), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip_is_identity_and_canonical(v) -> None:
    enc = bencode.encode(v)
    assert bencode.decode(enc) == v
    assert bencode.encode(bencode.decode(enc)) == enc


def test_known_encodings() -> None:
    assert bencode.encode({"b": 1, "a": [b"x", -3]}) == b"d1:al1:xi-3ee1:bi1ee"
    assert bencode.encode(0) == b"i0e"


@pytest.mark.parametrize("bad", [
    b"i01e", b"i-0e", b"i-e", b"ie", b"i1", b"01:a", b"2:a", b"d1:bi1e1:ai2ee",  # unsorted
    b"d1:ai1e1:ai2ee",  # duplicate key
    b"di1ei2ee",  # non-string key
    b"i1ei2e",  # trailing bytes
    b"l" * 20 + b"e" * 20,  # too deep
    b"", b"x", b"i" + b"9" * 30 + b"e",
])
def test_non_canonical_or_malformed_is_refused(bad: bytes) -> None:
    with pytest.raises(BencodeError):
        bencode.decode(bad)


def test_limits() -> None:
    with pytest.raises(BencodeError):
        bencode.decode(b"l" + b"i1e" * 10 + b"e", bencode.Limits(max_items=5))
    with pytest.raises(BencodeError):
        bencode.decode(b"3:abc", bencode.Limits(max_size=4))


def test_encode_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(EncodeError):
        bencode.encode(True)
    with pytest.raises(EncodeError):
        bencode.encode({1: 2})  # type: ignore[dict-item]
    with pytest.raises(EncodeError):
        bencode.encode(1.5)  # type: ignore[arg-type]
