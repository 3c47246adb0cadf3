"""The transactions of a channel: each version's refund, the cooperative close, the re-anchor.

A version spends the funding 2-of-2 (``Setup``) into its outputs in canonical order
(``version_outputs``): balances, then escrows, then bet stakes; balances below dust go to the fee.
Signing and verifying run on every update, so ``version_digest`` computes the BIP143 digest
directly for this one-input shape.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import coincurve
from embit.transaction import Transaction

from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel.errors import BalanceViolation, EscrowViolation
from eschaton.core.channel.fields import int_field
from eschaton.core.channel.params import DUST_LIMIT, ChannelParams
from eschaton.core.channel.scripts import multi_hashlock_cltv
from eschaton.core.channel.versions import (
    ROLES,
    SEQUENCE_BASE,
    Version,
    close_balances,
    close_fee,
    idx,
    other,
)
from eschaton.core.txcodec import compact_size, sha256d


@dataclass(frozen=True, slots=True)
class Setup:
    """What both parties agreed about the funding output and where refunds pay."""

    funding_txid: str
    funding_vout: int
    capacity: int
    pubkeys: tuple[bytes, bytes]  # (opener, acceptor) 2-of-2 keys, also used in hash-locked outputs
    payout_scripts: tuple[bytes, bytes]

    @property
    def witness_script(self) -> bytes:
        return S.multisig_2of2(self.pubkeys[0], self.pubkeys[1])

    @property
    def funding_script(self) -> bytes:
        return S.p2wsh(self.witness_script)

    def to_fields(self) -> dict[str, object]:
        return {"funding_txid": self.funding_txid, "funding_vout": self.funding_vout,
                "capacity": self.capacity, "pubkeys": list(self.pubkeys),
                "payout_scripts": list(self.payout_scripts)}

    @classmethod
    def from_fields(cls, d: dict[str, object]) -> Setup:
        pk = d["pubkeys"]
        ps = d["payout_scripts"]
        assert isinstance(pk, list) and isinstance(ps, list)
        return cls(str(d["funding_txid"]), int_field(d, "funding_vout"), int_field(d, "capacity"),
                   (bytes(pk[0]), bytes(pk[1])), (bytes(ps[0]), bytes(ps[1])))


@dataclass(frozen=True, slots=True)
class OutputInfo:
    """One refund output: what it is, its script, and (for contracts) how to spend it."""

    kind: str  # "balance" | "escrow" | "stake"
    role: str  # balance: owner; escrow: payer; stake: owner
    value: int
    script_pubkey: bytes
    witness_script: bytes | None = None
    contract_id: int = 0
    claim_role: str = ""  # who may claim with a preimage
    timeout: int = 0
    hashes: tuple[bytes, ...] = ()


def version_outputs(v: Version, s: Setup) -> list[OutputInfo]:
    """Refund outputs in their canonical order; balances below dust are left to the fee."""
    outs: list[OutputInfo] = []
    for i, role in enumerate(ROLES):
        if v.balances[i] >= DUST_LIMIT:
            outs.append(OutputInfo("balance", role, v.balances[i], s.payout_scripts[i]))
    for e in sorted(v.escrows, key=lambda e: e.id):
        ws = S.hashlock_cltv(e.payment_hash, s.pubkeys[idx(e.payee)], s.pubkeys[idx(e.payer)], e.timeout)
        outs.append(OutputInfo("escrow", e.payer, e.amount, S.p2wsh(ws), ws, e.id, e.payee,
                               e.timeout, (e.payment_hash,)))
    for b in sorted(v.bets, key=lambda b: b.id):
        for i, role in enumerate(ROLES):
            hashes = b.claim_hashes(role)
            ws = multi_hashlock_cltv(hashes, s.pubkeys[idx(other(role))], s.pubkeys[i], b.timeout)
            outs.append(OutputInfo("stake", role, b.stakes[i], S.p2wsh(ws), ws, b.id, other(role),
                                   b.timeout, tuple(hashes)))
    return outs


@functools.lru_cache(maxsize=256)
def _input_consts(s: Setup) -> tuple[bytes, bytes, bytes]:
    """(outpoint, hashPrevouts, scriptCode + amount) of the funding input: the same for every
    version of a channel, so computed once per setup (Setup is frozen, hence a safe cache key)."""
    outpoint = bytes.fromhex(s.funding_txid)[::-1] + s.funding_vout.to_bytes(4, "little")
    ws = s.witness_script
    return outpoint, sha256d(outpoint), compact_size(len(ws)) + ws + s.capacity.to_bytes(8, "little")


_VER = (2).to_bytes(4, "little")
_ALL = (1).to_bytes(4, "little")


def version_digest(v: Version, s: Setup) -> tuple[bytes, str]:
    """(BIP143 SIGHASH_ALL digest of the 2-of-2 input, txid) of ``version_tx(v, s)``.

    Hand-rolled for this one-input shape because it runs twice per update (sign, verify) and
    embit's general serialiser costs several times more; ``test_version_digest_matches_embit``
    pins it to embit's result.
    """
    if v.escrows or v.bets:
        pairs = [(o.value, o.script_pubkey) for o in version_outputs(v, s)]
    else:  # balance outputs only (most versions): the same outputs without building OutputInfos
        pairs = [(v.balances[i], s.payout_scripts[i]) for i in (0, 1) if v.balances[i] >= DUST_LIMIT]
    if not pairs:
        raise BalanceViolation("a version must have at least one output above dust")
    outs = b"".join(value.to_bytes(8, "little") + compact_size(len(spk)) + spk for value, spk in pairs)
    outpoint, hash_prevouts, code_amount = _input_consts(s)
    seq = (SEQUENCE_BASE + v.number).to_bytes(4, "little")
    lock = v.locktime.to_bytes(4, "little")
    pre = _VER + hash_prevouts + sha256d(seq) + outpoint + code_amount + seq + sha256d(outs) + lock + _ALL
    body = _VER + b"\x01" + outpoint + b"\x00" + seq + compact_size(len(pairs)) + outs + lock
    return sha256d(pre), sha256d(body)[::-1].hex()


@functools.lru_cache(maxsize=256)
def _public_key(pubkey: bytes) -> coincurve.PublicKey:
    """Parsed once per key: parsing costs a tenth of a verification, and a channel verifies every
    update against the same peer key."""
    return coincurve.PublicKey(pubkey)


def sign_digest(digest: bytes, key: coincurve.PrivateKey) -> bytes:
    return bytes(key.sign(digest, hasher=None)) + bytes([T.SIGHASH_ALL])


def verify_digest(digest: bytes, pubkey: bytes, sig: bytes) -> bool:
    """Low-S DER + SIGHASH_ALL check, as ``tx.check_signature`` does, on a precomputed digest."""
    if len(sig) < 9 or sig[-1] != T.SIGHASH_ALL:
        return False
    der = sig[:-1]
    try:
        if coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.der_to_cdata(der)) != der:
            return False  # not canonical low-S DER: non-standard, would not relay
        return bool(_public_key(pubkey).verify(der, digest, hasher=None))
    except (ValueError, TypeError):
        return False


def version_tx(v: Version, s: Setup) -> Transaction:
    outs = [T.TxOut(o.value, o.script_pubkey) for o in version_outputs(v, s)]
    if not outs:
        raise BalanceViolation("a version must have at least one output above dust")
    return T.build_tx([T.TxIn(s.funding_txid, s.funding_vout, SEQUENCE_BASE + v.number)], outs, v.locktime, 2)


def close_tx(p: ChannelParams, v: Version, s: Setup) -> Transaction:
    """The cooperative close: current balances with the fee reserve refunded (``close_balances``),
    no nLockTime, final nSequence."""
    if v.escrows or v.bets:
        raise EscrowViolation("settle escrows and bets before a cooperative close")
    final = replace(v, balances=close_balances(p, v), fee=close_fee(p, v))
    outs = [T.TxOut(o.value, o.script_pubkey) for o in version_outputs(final, s)]
    if not outs:
        raise BalanceViolation("a close must have at least one output above dust")
    return T.build_tx([T.TxIn(s.funding_txid, s.funding_vout, T.SEQUENCE_FINAL)], outs, 0, 2)


def reanchor_tx(s: Setup, new_capacity: int) -> Transaction:
    """Spend the funding output into a new 2-of-2 output (same keys): final, no nLockTime."""
    return T.build_tx([T.TxIn(s.funding_txid, s.funding_vout, T.SEQUENCE_FINAL)],
                      [T.TxOut(new_capacity, s.funding_script)], 0, 2)


def sign(tx: Transaction, s: Setup, key: coincurve.PrivateKey) -> bytes:
    """Low-S DER signature plus SIGHASH_ALL (as ``tx.sign_input``, with a prepared key)."""
    digest = T.sighash_segwit(tx, 0, s.witness_script, s.capacity)
    return bytes(key.sign(digest, hasher=None)) + bytes([T.SIGHASH_ALL])


def verify(tx: Transaction, s: Setup, pubkey: bytes, sig: bytes) -> bool:
    return T.check_signature(tx, 0, s.witness_script, s.capacity, pubkey, sig)


def complete(tx: Transaction, s: Setup, sigs: dict[bytes, bytes]) -> bytes:
    """Serialised ``tx`` with the 2-of-2 witness from both signatures."""
    T.set_witness(tx, 0, S.witness_2of2(s.witness_script, sigs))
    return T.serialize(tx)
