"""PSBT (BIP174) export and import, so an external wallet can fund or sign a channel.

Rules:
- Export attaches ``witness_utxo`` (and, where we know it, the BIP32 derivation) to each input,
  so a hardware or desktop wallet can compute BIP143 digests and show the amounts.
- Import never trusts the PSBT: it is parsed with typed errors, every partial signature is
  checked against the input's script and amount before finalizing, and the result goes through
  ``parse_tx`` again.
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
) -> str:
    """Base64 PSBT for ``tx``. ``spent[i]`` is the output input i spends.

    ``origins`` maps input index -> (pubkey, origin) for inputs our keys can sign;
    ``witness_scripts`` maps input index -> witness script for P2WSH inputs.
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
    return str(psbt.to_base64())


def parse_psbt(b64: str) -> PSBT:
    try:
        psbt = PSBT.from_base64(b64.strip())
    except Exception as e:  # embit raises assorted types for garbage
        raise PsbtError(f"malformed PSBT: {e}") from e
    for i in range(len(psbt.tx.vin)):
        if psbt.inputs[i].witness_utxo is None:
            raise PsbtError(f"PSBT input {i} lacks its witness_utxo")
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
