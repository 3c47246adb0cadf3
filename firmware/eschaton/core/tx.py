"""Bitcoin transactions: strict parsing, building, BIP143 signing, size and finality.

Theory of operation:
- ``parse_tx`` is the only way bytes from outside become a transaction. The strict decoder of
  ``core.txcodec`` checks the structure first, because embit's reader trusts length prefixes and
  silently accepts short reads (a truncated locktime parses as a smaller number, and a huge
  input count loops). Anything malformed raises ``TxDecodeError`` (a ``RemoteError``).
- Transactions are embit ``Transaction`` objects; this module hides embit's pitfalls: fresh
  lists are always passed, and txids are display-order hex strings.
- Signatures are made with coincurve (libsecp256k1): RFC6979 nonces, low-S, DER, plus the
  sighash byte. The message is embit's BIP143 digest.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import coincurve
from embit import script as _escript
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from eschaton.core.txcodec import TxDecodeError, decode_tx
from eschaton.errors import LocalError

__all__ = ["TxDecodeError"]  # re-exported: the one decode error of the transaction layer

SIGHASH_ALL = 1
SEQUENCE_FINAL = 0xFFFFFFFF
# nLockTime is enforced only if some input's nSequence is below final; we use this value,
# which also leaves BIP68 relative locks disabled (bit 31 set).
SEQUENCE_LOCKTIME = 0xFFFFFFFE
MAX_TX_SIZE = 400_000  # consensus max block weight / 10 is far above any standard tx; bound input
MAX_MONEY = 21_000_000 * 100_000_000


class TxError(LocalError):
    """A transaction could not be built or signed from the given parts."""


@dataclass(frozen=True, slots=True)
class TxIn:
    txid: str  # display-order hex
    vout: int
    sequence: int = SEQUENCE_FINAL


@dataclass(frozen=True, slots=True)
class TxOut:
    value: int
    script_pubkey: bytes


# --- parsing ------------------------------------------------------------------------------


def parse_tx(raw: bytes) -> Transaction:
    """Parse a serialised transaction; raises TxDecodeError for any malformed input."""
    if not isinstance(raw, (bytes, bytearray)):
        raise TxDecodeError("transaction must be bytes")
    raw = bytes(raw)
    if len(raw) > MAX_TX_SIZE:
        raise TxDecodeError("transaction too large")
    decoded = decode_tx(raw)  # strict structure: canonical sizes, every byte consumed
    if not decoded.inputs:
        raise TxDecodeError("transaction has no inputs")
    if not decoded.outputs:
        raise TxDecodeError("transaction has no outputs")
    if any(not 0 <= o.value <= MAX_MONEY for o in decoded.outputs):
        raise TxDecodeError("output value out of range")
    try:
        tx = Transaction.parse(raw)
    except Exception as e:  # embit raises assorted types; _scan should have caught all of them
        raise TxDecodeError(f"transaction decode failed: {e}") from e
    if bytes(tx.serialize()) != raw:
        raise TxDecodeError("transaction does not round-trip")
    return tx


def parse_tx_hex(text: str) -> Transaction:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError as e:
        raise TxDecodeError("transaction is not valid hex") from e
    return parse_tx(raw)


# --- building -----------------------------------------------------------------------------


def build_tx(
    inputs: Sequence[TxIn], outputs: Sequence[TxOut], locktime: int = 0, version: int = 2
) -> Transaction:
    if not inputs:
        raise TxError("a transaction needs at least one input")
    if not outputs:
        raise TxError("a transaction needs at least one output")
    if not 0 <= locktime <= 0xFFFFFFFF:
        raise TxError("locktime out of range")
    vin = []
    for i in inputs:
        if len(i.txid) != 64:
            raise TxError(f"bad txid {i.txid!r}")
        try:
            txid = bytes.fromhex(i.txid)
        except ValueError as e:
            raise TxError(f"bad txid {i.txid!r}") from e
        if not 0 <= i.vout <= 0xFFFFFFFF or not 0 <= i.sequence <= 0xFFFFFFFF:
            raise TxError("input index or sequence out of range")
        vin.append(TransactionInput(txid, i.vout, sequence=i.sequence))
    vout = []
    for o in outputs:
        if not 0 <= o.value <= MAX_MONEY:
            raise TxError(f"output value {o.value} out of range")
        vout.append(TransactionOutput(o.value, _escript.Script(bytes(o.script_pubkey))))
    return Transaction(version=version, vin=vin, vout=vout, locktime=locktime)


def serialize(tx: Transaction) -> bytes:
    return bytes(tx.serialize())


def txid(tx: Transaction) -> str:
    return bytes(tx.txid()).hex()


def outputs_of(tx: Transaction) -> list[TxOut]:
    return [TxOut(int(o.value), bytes(o.script_pubkey.data)) for o in tx.vout]


def inputs_of(tx: Transaction) -> list[TxIn]:
    return [TxIn(bytes(i.txid).hex(), int(i.vout), int(i.sequence)) for i in tx.vin]


def weight(tx: Transaction) -> int:
    full = len(serialize(tx))
    base = len(_strip_witness(tx))
    return base * 3 + full


def vsize(tx: Transaction) -> int:
    return (weight(tx) + 3) // 4


def _strip_witness(tx: Transaction) -> bytes:
    bare = Transaction(
        version=tx.version,
        vin=[TransactionInput(i.txid, i.vout, i.script_sig, i.sequence) for i in tx.vin],
        vout=list(tx.vout),
        locktime=tx.locktime,
    )
    return bytes(bare.serialize())


def set_witness(tx: Transaction, index: int, items: Sequence[bytes]) -> None:
    if not 0 <= index < len(tx.vin):
        raise TxError("input index out of range")
    tx.vin[index].witness = _escript.Witness(list(items))


# --- signing ------------------------------------------------------------------------------


def sighash_segwit(tx: Transaction, index: int, script_code: bytes, amount: int) -> bytes:
    """BIP143 digest of input ``index`` spending ``amount`` under ``script_code``."""
    if not 0 <= index < len(tx.vin):
        raise TxError("input index out of range")
    return bytes(tx.sighash_segwit(index, _escript.Script(script_code), amount, SIGHASH_ALL))


def sign_input(tx: Transaction, index: int, script_code: bytes, amount: int, privkey: bytes) -> bytes:
    """DER signature (low-S) plus SIGHASH_ALL for input ``index``."""
    digest = sighash_segwit(tx, index, script_code, amount)
    sig = coincurve.PrivateKey(privkey).sign(digest, hasher=None)
    return bytes(sig) + bytes([SIGHASH_ALL])


def check_signature(
    tx: Transaction, index: int, script_code: bytes, amount: int, pubkey: bytes, signature: bytes
) -> bool:
    """True if ``signature`` (DER + SIGHASH_ALL) by ``pubkey`` commits to this input.

    Used to check a peer's signature before we store it; the chain's own check is the kernel's.
    High-S signatures are refused because they are non-standard and would not relay.
    """
    if len(signature) < 9 or signature[-1] != SIGHASH_ALL:
        return False
    try:
        der = signature[:-1]
        normalized = coincurve.ecdsa.cdata_to_der(
            coincurve.ecdsa.der_to_cdata(der)
        )
        if normalized != der:
            return False
        pk = coincurve.PublicKey(pubkey)
        digest = sighash_segwit(tx, index, script_code, amount)
        return bool(pk.verify(der, digest, hasher=None))
    except (ValueError, TypeError, TxError):
        return False


def p2wpkh_code_for(script_pubkey: bytes) -> bytes:
    """BIP143 scriptCode for spending a P2WPKH output script."""
    if len(script_pubkey) != 22 or script_pubkey[:2] != b"\x00\x14":
        raise TxError("not a P2WPKH output script")
    return bytes([0x76, 0xA9, 20]) + script_pubkey[2:] + bytes([0x88, 0xAC])


def pubkey_of(privkey: bytes) -> bytes:
    return bytes(coincurve.PrivateKey(privkey).public_key.format(compressed=True))


# --- finality -----------------------------------------------------------------------------


def is_final(tx: Transaction, next_height: int, median_time_past: int) -> bool:
    """Consensus finality (IsFinalTx) for inclusion in the block at ``next_height``."""
    lt = int(tx.locktime)
    if lt == 0:
        return True
    limit = next_height if lt < 500_000_000 else median_time_past
    if lt < limit:
        return True
    return all(int(i.sequence) == SEQUENCE_FINAL for i in tx.vin)
