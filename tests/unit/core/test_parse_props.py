"""Property tests: malformed transactions and PSBTs raise typed errors and never crash."""
from __future__ import annotations

import hashlib

import coincurve
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core import psbt, script
from eschaton.core.tx import TxDecodeError, TxIn, TxOut, build_tx, parse_tx, serialize, set_witness

PRIV = hashlib.sha256(b"p").digest()
PUB = coincurve.PrivateKey(PRIV).public_key.format()


def sample_tx() -> bytes:
    tx = build_tx([TxIn("22" * 32, 3, 0xFFFFFFFE)],
                  [TxOut(1234, script.p2wpkh(PUB)), TxOut(0, script.op_return(b"hi"))], locktime=77)
    set_witness(tx, 0, [b"\x30" * 71, PUB])
    return serialize(tx)


SAMPLE = sample_tx()


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_typed_error(data: bytes) -> None:
    try:
        tx = parse_tx(data)
    except TxDecodeError:
        return
    assert serialize(tx) == data  # anything accepted round-trips exactly


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255), st.booleans(), st.integers(0, len(SAMPLE)))
def test_mutated_transactions(pos: int, byte: int, truncate: bool, cut: int) -> None:
    data = bytearray(SAMPLE)
    data[pos] = byte
    if truncate:
        data = data[:cut]
    try:
        tx = parse_tx(bytes(data))
    except TxDecodeError:
        return
    assert serialize(tx) == bytes(data)


def test_sample_parses_and_truncations_fail() -> None:
    assert serialize(parse_tx(SAMPLE)) == SAMPLE
    for n in range(len(SAMPLE)):
        try:
            parse_tx(SAMPLE[:n])
        except TxDecodeError:
            continue
        raise AssertionError(f"truncation to {n} bytes was accepted")
    try:
        parse_tx(SAMPLE + b"\x00")
    except TxDecodeError:
        pass
    else:
        raise AssertionError("trailing byte accepted")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_random_psbt_text_raises_typed_error(text: str) -> None:
    try:
        psbt.parse_psbt(text)
    except TxDecodeError:
        pass
