"""``non_witness_utxo`` in PSBTs: attached on export, checked on import (sans-IO, no chain)."""
from __future__ import annotations

import pytest
from embit.psbt import PSBT

from eschaton.core import psbt, script
from eschaton.core.tx import (
    TxIn,
    TxOut,
    build_tx,
    p2wpkh_code_for,
    parse_tx,
    pubkey_of,
    serialize,
    set_witness,
    sign_input,
    txid,
)

KEY = b"\x11" * 32
SPK = script.p2wpkh(pubkey_of(KEY))
SPENT = TxOut(90_000, SPK)


def spend() -> tuple[bytes, bytes]:
    """(raw previous transaction paying SPK at output 1, an unsigned spend of that output)."""
    prev = build_tx([TxIn("ab" * 32, 0, 0xFFFFFFFD)], [TxOut(1_000, SPK), TxOut(90_000, SPK)])
    tx = build_tx([TxIn(txid(prev), 1, 0xFFFFFFFD)], [TxOut(80_000, script.p2wpkh(pubkey_of(b"\x22" * 32)))])
    return serialize(prev), serialize(tx)


def export(prev_raw: bytes, spent: TxOut = SPENT) -> str:
    return psbt.export_psbt(parse_tx(spend()[1]), [spent], prev_txs={0: prev_raw})


def test_export_attaches_the_previous_transaction_and_import_accepts_it() -> None:
    prev_raw, _ = spend()
    b64 = export(prev_raw)
    p = psbt.parse_psbt(b64)
    assert bytes(p.inputs[0].non_witness_utxo.serialize()) == prev_raw
    # An input with non_witness_utxo alone (as some signers send) gets its witness_utxo from it.
    bare = PSBT.from_base64(b64)
    bare.inputs[0].witness_utxo = None
    p = psbt.parse_psbt(bare.to_base64())
    assert psbt.spent_outputs(p) == [TxOut(90_000, SPK)]
    sig = sign_input(p.tx, 0, p2wpkh_code_for(SPK), 90_000, KEY)
    psbt.add_signature(p, 0, pubkey_of(KEY), sig)
    final = psbt.finalize(p.to_base64())
    signed = psbt.parse_psbt(b64).tx
    set_witness(signed, 0, script.witness_p2wpkh(sig, pubkey_of(KEY)))
    assert serialize(final) == serialize(signed)


def test_export_refuses_a_previous_transaction_that_does_not_match() -> None:
    prev_raw, _ = spend()
    other = serialize(build_tx([TxIn("cd" * 32, 0, 0xFFFFFFFD)], [TxOut(1_000, SPK), TxOut(90_000, SPK)]))
    with pytest.raises(psbt.PsbtError, match="not the one it spends"):
        export(other)
    with pytest.raises(psbt.PsbtError, match="does not hold its output"):
        export(prev_raw, TxOut(95_000, SPK))


def test_import_refuses_contradictions() -> None:
    prev_raw, _ = spend()
    b64 = export(prev_raw)
    # A witness_utxo claiming another amount than the proven one (the segwit fee attack).
    lie = PSBT.from_base64(b64)
    lie.inputs[0].witness_utxo.value = 1_000
    with pytest.raises(psbt.PsbtError, match="contradicts its non_witness_utxo"):
        psbt.parse_psbt(lie.to_base64())
    # A previous transaction that is not the one the input spends.
    swapped = PSBT.from_base64(b64)
    swapped.inputs[0].non_witness_utxo = PSBT.from_base64(export(prev_raw)).inputs[0].non_witness_utxo
    swapped.inputs[0].non_witness_utxo.vout[0].value = 2_000
    with pytest.raises(psbt.PsbtError, match="not the transaction it spends"):
        psbt.parse_psbt(swapped.to_base64())
    neither = PSBT.from_base64(b64)
    neither.inputs[0].witness_utxo = None
    neither.inputs[0].non_witness_utxo = None
    with pytest.raises(psbt.PsbtError, match="lacks its witness_utxo and non_witness_utxo"):
        psbt.parse_psbt(neither.to_base64())
