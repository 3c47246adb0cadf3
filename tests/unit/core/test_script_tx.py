"""Scripts and transactions from eschaton.core, judged by libbitcoinkernel's interpreter."""
from __future__ import annotations

import hashlib

import coincurve
import pytest

from eschaton.chain.errors import ScriptVerifyError
from eschaton.chain.kernel import verify_input
from eschaton.core import script
from eschaton.core.tx import (
    SEQUENCE_LOCKTIME,
    TxError,
    TxIn,
    TxOut,
    build_tx,
    check_signature,
    is_final,
    p2wpkh_code_for,
    parse_tx,
    serialize,
    set_witness,
    sign_input,
    txid,
    vsize,
)

PREV = "11" * 32


def key(n: int) -> tuple[bytes, bytes]:
    priv = hashlib.sha256(b"key%d" % n).digest()
    return priv, coincurve.PrivateKey(priv).public_key.format()


A, B = key(1), key(2)


def spend(prev_spk: bytes, amount: int, out_spk: bytes, locktime: int = 0,
          sequence: int = 0xFFFFFFFF):
    return build_tx([TxIn(PREV, 0, sequence)], [TxOut(amount - 500, out_spk)], locktime=locktime)


def test_2of2_refund_verifies_and_needs_both_signatures() -> None:
    ws = script.multisig_2of2(A[1], B[1])
    spk = script.p2wsh(ws)
    tx = spend(spk, 100_000, script.p2wpkh(A[1]), locktime=500, sequence=SEQUENCE_LOCKTIME)
    sa = sign_input(tx, 0, ws, 100_000, A[0])
    sb = sign_input(tx, 0, ws, 100_000, B[0])
    assert check_signature(tx, 0, ws, 100_000, A[1], sa)
    assert not check_signature(tx, 0, ws, 100_000, B[1], sa)
    set_witness(tx, 0, script.witness_2of2(ws, {A[1]: sa, B[1]: sb}))
    verify_input(spk, 100_000, serialize(tx), 0)
    # Same signature twice: the kernel refuses.
    set_witness(tx, 0, script.witness_2of2(ws, {A[1]: sa, B[1]: sa}))
    with pytest.raises(ScriptVerifyError):
        verify_input(spk, 100_000, serialize(tx), 0)
    # Signing a different amount (BIP143 commits to it) makes the signature invalid.
    sb_wrong = sign_input(tx, 0, ws, 100_001, B[0])
    set_witness(tx, 0, script.witness_2of2(ws, {A[1]: sa, B[1]: sb_wrong}))
    with pytest.raises(ScriptVerifyError):
        verify_input(spk, 100_000, serialize(tx), 0)


def test_hashlock_claim_by_preimage_and_refund_after_timeout() -> None:
    pre = b"\x42" * 32
    ws = script.hashlock_cltv(script.sha256(pre), A[1], B[1], 700)
    spk = script.p2wsh(ws)
    claim = spend(spk, 50_000, script.p2wpkh(A[1]))
    set_witness(claim, 0, script.witness_hashlock_claim(ws, sign_input(claim, 0, ws, 50_000, A[0]), pre))
    verify_input(spk, 50_000, serialize(claim), 0)

    wrong = b"\x43" * 32
    set_witness(claim, 0, script.witness_hashlock_claim(ws, sign_input(claim, 0, ws, 50_000, A[0]), wrong))
    with pytest.raises(ScriptVerifyError):
        verify_input(spk, 50_000, serialize(claim), 0)

    # The refund key cannot take the claim branch even with the preimage.
    set_witness(claim, 0, script.witness_hashlock_claim(ws, sign_input(claim, 0, ws, 50_000, B[0]), pre))
    with pytest.raises(ScriptVerifyError):
        verify_input(spk, 50_000, serialize(claim), 0)

    refund = spend(spk, 50_000, script.p2wpkh(B[1]), locktime=700, sequence=SEQUENCE_LOCKTIME)
    set_witness(refund, 0, script.witness_hashlock_refund(ws, sign_input(refund, 0, ws, 50_000, B[0])))
    verify_input(spk, 50_000, serialize(refund), 0)

    early = spend(spk, 50_000, script.p2wpkh(B[1]), locktime=699, sequence=SEQUENCE_LOCKTIME)
    set_witness(early, 0, script.witness_hashlock_refund(ws, sign_input(early, 0, ws, 50_000, B[0])))
    with pytest.raises(ScriptVerifyError):
        verify_input(spk, 50_000, serialize(early), 0)


def test_p2wpkh_and_op_return() -> None:
    spk = script.p2wpkh(A[1])
    tx = build_tx([TxIn(PREV, 1)], [TxOut(0, script.op_return(b"eschaton timestamp")),
                                     TxOut(9_000, script.p2wpkh(B[1]))])
    set_witness(tx, 0, script.witness_p2wpkh(sign_input(tx, 0, p2wpkh_code_for(spk), 10_000, A[0]), A[1]))
    verify_input(spk, 10_000, serialize(tx), 0)
    assert parse_tx(serialize(tx)).vout[0].script_pubkey.data[0] == script.OP_RETURN
    assert 100 < vsize(tx) < 200
    with pytest.raises(script.ScriptError):
        script.op_return(b"x" * 81)


def test_builders_refuse_bad_parts() -> None:
    with pytest.raises(script.ScriptError):
        script.multisig_2of2(A[1], A[1])
    with pytest.raises(script.ScriptError):
        script.multisig_2of2(A[1], b"\x04" + b"\x00" * 64)
    with pytest.raises(script.ScriptError):
        script.hashlock_cltv(b"short", A[1], B[1], 10)
    with pytest.raises(script.ScriptError):
        script.hashlock_cltv(b"\x00" * 32, A[1], B[1], 600_000_000)
    with pytest.raises(TxError):
        build_tx([], [TxOut(1, b"")])
    with pytest.raises(TxError):
        build_tx([TxIn("zz" * 32, 0)], [TxOut(1, b"")])
    with pytest.raises(TxError):
        build_tx([TxIn(PREV, 0)], [TxOut(-1, b"")])


def test_finality_rules() -> None:
    tx = spend(b"", 1000, b"", locktime=100, sequence=SEQUENCE_LOCKTIME)
    assert not is_final(tx, 100, 0)  # locktime must be strictly below the block height
    assert is_final(tx, 101, 0)
    tx_final_seq = spend(b"", 1000, b"", locktime=100)
    assert is_final(tx_final_seq, 50, 0)  # every input final: locktime ignored


def test_address_round_trip_and_network_check() -> None:
    spk = script.p2wpkh(A[1])
    addr = script.script_to_address(spk, "regtest")
    assert addr is not None and addr.startswith("bcrt1")
    assert script.address_to_script(addr, "regtest") == spk
    main_addr = script.script_to_address(spk, "main")
    assert main_addr is not None
    with pytest.raises(script.ScriptError):
        script.address_to_script(main_addr, "regtest")
    for bad in ("", "bcrt1qqqq", "not an address", addr[:-1] + ("q" if addr[-1] != "q" else "p")):
        with pytest.raises(script.ScriptError):
            script.address_to_script(bad, "regtest")
    assert txid(spend(spk, 1000, spk)) == txid(parse_tx(serialize(spend(spk, 1000, spk))))
