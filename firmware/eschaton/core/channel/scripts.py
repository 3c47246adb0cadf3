"""Output scripts specific to trade channels (bet stakes).

A bet stake output must be claimable by the counterparty on the preimage of ANY outcome the
counterparty wins, and return to its owner after a timeout otherwise. ``eschaton.core.script``'s
``hashlock_cltv`` covers the one-hash case (and is used for it); this module adds the k-hash
form. It is assembled from opcodes because no library offers this template:

    OP_IF
        OP_SIZE 32 OP_EQUALVERIFY OP_SHA256
        (OP_DUP <h_i> OP_EQUAL OP_TOALTSTACK) for every hash but the last
        <h_last> OP_EQUAL
        (OP_FROMALTSTACK OP_BOOLOR) once per earlier hash
        OP_VERIFY <claim_pubkey>
    OP_ELSE
        <timeout> OP_CHECKLOCKTIMEVERIFY OP_DROP <refund_pubkey>
    OP_ENDIF OP_CHECKSIG

Witnesses are the same as ``hashlock_cltv``'s (claim: sig, preimage, 1; refund: sig, empty).
"""
from __future__ import annotations

from collections.abc import Sequence

from eschaton.core import script as S

OP_DUP = 0x76
OP_TOALTSTACK = 0x6B
OP_FROMALTSTACK = 0x6C
OP_BOOLOR = 0x9B
OP_VERIFY = 0x69


def multi_hashlock_cltv(hashes: Sequence[bytes], claim_pubkey: bytes, refund_pubkey: bytes, timeout: int) -> bytes:
    if len(hashes) == 1:
        return S.hashlock_cltv(hashes[0], claim_pubkey, refund_pubkey, timeout)
    if not 2 <= len(hashes) <= 16 or any(len(h) != 32 for h in hashes):
        raise S.ScriptError("multi-hashlock needs 1..16 hashes of 32 bytes")
    # Validate keys and timeout with the shared builder (cheap, and keeps one set of rules).
    S.hashlock_cltv(hashes[0], claim_pubkey, refund_pubkey, timeout)
    out = bytearray([S.OP_IF, S.OP_SIZE]) + S.push_int(32) + bytes([S.OP_EQUALVERIFY, S.OP_SHA256])
    for h in hashes[:-1]:
        out += bytes([OP_DUP]) + S.push_data(h) + bytes([S.OP_EQUAL, OP_TOALTSTACK])
    out += S.push_data(hashes[-1]) + bytes([S.OP_EQUAL])
    out += bytes([OP_FROMALTSTACK, OP_BOOLOR]) * (len(hashes) - 1)
    out += bytes([OP_VERIFY]) + S.push_data(claim_pubkey)
    out += bytes([S.OP_ELSE]) + S.push_int(timeout) + bytes([S.OP_CHECKLOCKTIMEVERIFY, S.OP_DROP])
    out += S.push_data(refund_pubkey) + bytes([S.OP_ENDIF, S.OP_CHECKSIG])
    return bytes(out)
