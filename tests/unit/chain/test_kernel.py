"""The kernel wrapper verifies real spends and turns every bad input into a typed error."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.chain import kernel
from eschaton.chain.errors import InvalidRequest, ScriptVerifyError, TxDecodeError
from eschaton.core.txcodec import decode_tx
from tests.unit.chain.helpers import Key, build_tx, spend_p2wpkh

PREV = "11" * 32
VALUE = 50_000


@pytest.fixture()
def spend() -> tuple[Key, bytes]:
    k = Key(1)
    raw = spend_p2wpkh(PREV, 0, VALUE, k, [(VALUE - 500, Key(2).p2wpkh)])
    return k, raw


def test_real_p2wpkh_spend_verifies(spend: tuple[Key, bytes]) -> None:
    k, raw = spend
    kernel.verify_input(k.p2wpkh, VALUE, raw, 0)
    kernel.verify_input(k.p2wpkh, VALUE, raw, 0, spent_outputs=[(VALUE, k.p2wpkh)])
    kernel.verify_tx(raw, [(VALUE, k.p2wpkh)])


def test_wrong_amount_wrong_key_and_bad_signature_fail(spend: tuple[Key, bytes]) -> None:
    k, raw = spend
    with pytest.raises(ScriptVerifyError) as e:
        kernel.verify_input(k.p2wpkh, VALUE + 1, raw, 0)  # BIP143 commits to the amount
    assert e.value.reason == "mandatory-script-verify-flag-failed"
    with pytest.raises(ScriptVerifyError):
        kernel.verify_input(Key(3).p2wpkh, VALUE, raw, 0)
    tx = decode_tx(raw)
    sig = tx.inputs[0].witness[0]
    bad = raw.replace(sig, sig[:-6] + bytes([sig[-6] ^ 1]) + sig[-5:])
    assert bad != raw
    with pytest.raises(ScriptVerifyError):
        kernel.verify_tx(bad, [(VALUE, k.p2wpkh)])


def test_guards_before_the_c_library(spend: tuple[Key, bytes]) -> None:
    k, raw = spend
    for idx in (1, -1, 2**32):
        with pytest.raises(InvalidRequest):
            kernel.verify_input(k.p2wpkh, VALUE, raw, idx)
    for flags in (1 << 30, -1, kernel.ALL_FLAGS | (1 << 1)):
        with pytest.raises(InvalidRequest):
            kernel.verify_input(k.p2wpkh, VALUE, raw, 0, flags=flags)
    with pytest.raises(InvalidRequest):
        kernel.verify_input(k.p2wpkh, VALUE, raw, 0, flags=kernel.STANDARD_FLAGS | kernel.TAPROOT)
    with pytest.raises(InvalidRequest):
        kernel.verify_tx(raw, [])
    with pytest.raises(InvalidRequest):
        kernel.verify_input(k.p2wpkh, -5, raw, 0)


def test_malformed_bytes(spend: tuple[Key, bytes]) -> None:
    k, raw = spend
    for bad in (b"", b"\x00", raw[:-1], raw + b"\x00", b"\x02\x00\x00\x00\x00\x02" + raw[6:]):
        with pytest.raises(TxDecodeError) as e:
            kernel.verify_input(k.p2wpkh, VALUE, bad, 0)
        assert e.value.reason == "TX decode failed"


def test_codec_matches_embit_ids() -> None:
    k = Key(1)
    tx = build_tx([(PREV, 3)], [(1000, k.p2wpkh), (2000, Key(5).p2wpkh)], locktime=7)
    legacy = tx.serialize()
    d = decode_tx(legacy)
    assert d.txid == tx.txid().hex() and d.locktime == 7 and d.inputs[0].prev_txid_hex == PREV
    raw = spend_p2wpkh(PREV, 0, VALUE, k, [(VALUE - 500, k.p2wpkh)])
    d = decode_tx(raw)
    assert d.has_witness and d.txid != d.wtxid and d.vsize < len(raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        tx = decode_tx(data)
    except TxDecodeError:
        return
    # Whatever decodes must round-trip exactly and be safe to hand to the kernel.
    assert tx.raw == data
    if tx.inputs:
        try:
            kernel.verify_input(b"\x51", 0, data, 0)
        except ScriptVerifyError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_real_tx_never_crashes(data: st.DataObject) -> None:
    k = Key(1)
    raw = bytearray(spend_p2wpkh(PREV, 0, VALUE, k, [(VALUE - 500, k.p2wpkh)]))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    blob = bytes(raw[:cut])
    try:
        kernel.verify_input(k.p2wpkh, VALUE, blob, 0)
    except (TxDecodeError, ScriptVerifyError, InvalidRequest):
        pass
