"""PSBT (BIP174) export and import, so an external wallet can fund or sign a channel.

Rules:
- Export attaches ``witness_utxo`` (and, where we know it, the BIP32 derivation) to each input,
  so a hardware or desktop wallet can compute BIP143 digests and show the amounts. It also
  attaches ``non_witness_utxo``, the whole previous transaction, when the caller has it: signers
  that guard against the segwit fee attack (BDK by default, hardware wallets) refuse to sign
  without it, since ``witness_utxo`` alone is an unproven claim about the amount.
- Import never trusts the PSBT: it is parsed with typed errors; a ``non_witness_utxo`` must hash
  to the input's previous txid and agree with any ``witness_utxo`` (which it supplies when absent);
  every partial signature is checked against the input's script and amount before finalizing,
  and the result goes through ``parse_tx`` again.
embit implements the container format; only the checks live here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from embit import script as _escript
from embit.finalizer import finalize_psbt
from embit.psbt import PSBT, DerivationPath
from embit.transaction import Transaction, TransactionOutput

from eschaton.core.tx import (
    TxDecodeError,
    TxOut,
    check_signature,
    p2wpkh_code_for,
    parse_tx,
    serialize,
)


class PsbtError(TxDecodeError):
    """A PSBT that cannot be parsed, is inconsistent, or cannot be finalized."""


@dataclass(frozen=True, slots=True)
class KeyOrigin:
    fingerprint: bytes  # 4 bytes
    path: tuple[int, ...]


def export_psbt(
    tx: Transaction,
    spent: Sequence[TxOut],
    origins: Mapping[int, tuple[bytes, KeyOrigin]] | None = None,
    witness_scripts: Mapping[int, bytes] | None = None,
    prev_txs: Mapping[int, bytes] | None = None,
) -> str:
    """Base64 PSBT for ``tx``. ``spent[i]`` is the output input i spends.

    ``origins`` maps input index -> (pubkey, origin) for inputs our keys can sign;
    ``witness_scripts`` maps input index -> witness script for P2WSH inputs;
    ``prev_txs`` maps input index -> the raw transaction that input spends (``non_witness_utxo``).
    """
    if len(spent) != len(tx.vin):
        raise PsbtError("one spent output is needed per input")
    unsigned = parse_tx(serialize(tx))
    for inp in unsigned.vin:
        inp.witness = _escript.Witness([])
        inp.script_sig = _escript.Script(b"")
    psbt = PSBT(unsigned)
    for i, out in enumerate(spent):
        psbt.inputs[i].witness_utxo = TransactionOutput(out.value, _escript.Script(out.script_pubkey))
        if origins and i in origins:
            pub, origin = origins[i]
            from embit.ec import PublicKey

            psbt.inputs[i].bip32_derivations[PublicKey.parse(pub)] = DerivationPath(
                origin.fingerprint, list(origin.path)
            )
        if witness_scripts and i in witness_scripts:
            psbt.inputs[i].witness_script = _escript.Script(witness_scripts[i])
        if prev_txs and i in prev_txs:
            prev = parse_tx(prev_txs[i])
            vin = unsigned.vin[i]
            if prev.txid() != vin.txid:
                raise PsbtError(f"the previous transaction given for input {i} is not the one it spends")
            if vin.vout >= len(prev.vout) or _txout(prev.vout[vin.vout]) != out:
                raise PsbtError(f"the previous transaction given for input {i} does not hold its output")
            psbt.inputs[i].non_witness_utxo = prev
    return str(psbt.to_base64())


def _txout(o: TransactionOutput) -> TxOut:
    return TxOut(int(o.value), bytes(o.script_pubkey.data))


def parse_psbt(b64: str) -> PSBT:
    try:
        psbt = PSBT.from_base64(b64.strip())
    except Exception as e:  # embit raises assorted types for garbage
        raise PsbtError(f"malformed PSBT: {e}") from e
    for i, inp in enumerate(psbt.inputs):
        prev = inp.non_witness_utxo
        if prev is not None:
            if prev.txid() != inp.txid:
                raise PsbtError(f"PSBT input {i}: its non_witness_utxo is not the transaction it spends")
            if inp.vout >= len(prev.vout):
                raise PsbtError(f"PSBT input {i}: its non_witness_utxo has no output {inp.vout}")
            out = prev.vout[inp.vout]
            if inp.witness_utxo is None:
                inp.witness_utxo = TransactionOutput(out.value, _escript.Script(out.script_pubkey.data))
            elif _txout(inp.witness_utxo) != _txout(out):
                raise PsbtError(f"PSBT input {i}: its witness_utxo contradicts its non_witness_utxo")
        elif inp.witness_utxo is None:
            raise PsbtError(f"PSBT input {i} lacks its witness_utxo and non_witness_utxo")
    return psbt


def spent_outputs(psbt: PSBT) -> list[TxOut]:
    return [
        TxOut(int(inp.witness_utxo.value), bytes(inp.witness_utxo.script_pubkey.data))
        for inp in psbt.inputs
    ]


def add_signature(psbt: PSBT, index: int, pubkey: bytes, signature: bytes) -> None:
    from embit.ec import PublicKey

    psbt.inputs[index].partial_sigs[PublicKey.parse(pubkey)] = signature


def finalize(b64: str) -> Transaction:
    """Check every partial signature, finalize, and return the complete transaction."""
    psbt = parse_psbt(b64)
    spent = spent_outputs(psbt)
    tx = psbt.tx
    for i, inp in enumerate(psbt.inputs):
        for pub, sig in inp.partial_sigs.items():
            pk = bytes(pub.sec())
            if inp.witness_script is not None:
                code = bytes(inp.witness_script.data)
            else:
                code = p2wpkh_code_for(spent[i].script_pubkey)
            if not check_signature(tx, i, code, spent[i].value, pk, bytes(sig)):
                raise PsbtError(f"PSBT input {i} carries an invalid signature")
    try:
        final = finalize_psbt(psbt)
    except Exception as e:
        raise PsbtError(f"PSBT cannot be finalized: {e}") from e
    if final is None:
        raise PsbtError("PSBT is missing signatures")
    return parse_tx(bytes(final.serialize()))
