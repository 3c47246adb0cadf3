"""Spending hash-locked outputs of a confirmed version: claim by preimage, reclaim after timeout,
and read the preimage out of the other side's claim (``preimage_from_claim``).

Also ``payout_after`` models who ends up with each output of a version once some preimages are
public and every timeout has passed: the model the bet construction is judged by (and which the
integration tests check against the real chain).
"""
from __future__ import annotations

from collections.abc import Iterable

from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel.errors import InvalidRequest
from eschaton.core.channel.transactions import OutputInfo
from eschaton.core.channel.versions import ROLES, idx

SWEEP_SEQUENCE = T.SEQUENCE_LOCKTIME  # non-final so the reclaim's nLockTime (CLTV) is enforced


def claim_tx(out: OutputInfo, txid: str, vout: int, preimage: bytes, privkey: bytes,
             dest_script: bytes, fee: int) -> bytes:
    """Claim a hash-locked output with ``preimage`` (we must be its claimant)."""
    if out.witness_script is None or S.sha256(preimage) not in out.hashes:
        raise InvalidRequest("preimage does not unlock this output")
    tx = T.build_tx([T.TxIn(txid, vout, SWEEP_SEQUENCE)], [T.TxOut(out.value - fee, dest_script)], 0, 2)
    sig = T.sign_input(tx, 0, out.witness_script, out.value, privkey)
    T.set_witness(tx, 0, S.witness_hashlock_claim(out.witness_script, sig, preimage))
    return T.serialize(tx)


def reclaim_tx(out: OutputInfo, txid: str, vout: int, privkey: bytes, dest_script: bytes, fee: int) -> bytes:
    """Take a hash-locked output back after its timeout (valid from block ``out.timeout + 1``)."""
    if out.witness_script is None:
        raise InvalidRequest("not a hash-locked output")
    tx = T.build_tx([T.TxIn(txid, vout, SWEEP_SEQUENCE)], [T.TxOut(out.value - fee, dest_script)], out.timeout, 2)
    sig = T.sign_input(tx, 0, out.witness_script, out.value, privkey)
    T.set_witness(tx, 0, S.witness_hashlock_refund(out.witness_script, sig))
    return T.serialize(tx)


def preimage_from_claim(raw_tx: bytes, input_index: int, out: OutputInfo) -> bytes | None:
    """The preimage a claim of the hash-locked ``out`` revealed (input ``input_index`` of
    ``raw_tx`` spends it), or None when that input took the timeout path (or is not a claim).
    A payer learns the preimage this way when its payee claims on chain."""
    try:
        tx = T.parse_tx(raw_tx)
        items = [bytes(w) for w in tx.vin[input_index].witness.items]
    except (IndexError, ValueError, T.TxError):
        return None
    if len(items) == 4 and items[2] == b"\x01" and S.sha256(items[1]) in out.hashes:
        return items[1]
    return None


def payout_after(outputs: Iterable[OutputInfo], revealed: Iterable[bytes]) -> tuple[int, int]:
    """(opener, acceptor) totals once ``revealed`` preimages are public and timeouts have passed.

    A claimant with a matching preimage claims; otherwise the owner (escrow payer, stake owner)
    reclaims after the timeout. Balances go to their owner.
    """
    known = {S.sha256(p) for p in revealed}
    tot = [0, 0]
    for o in outputs:
        if o.kind == "balance":
            tot[idx(o.role)] += o.value
        elif known.intersection(o.hashes):
            tot[idx(o.claim_role)] += o.value
        else:
            tot[idx(o.role)] += o.value
    return tot[0], tot[1]


__all__ = ["ROLES", "claim_tx", "payout_after", "preimage_from_claim", "reclaim_tx"]
