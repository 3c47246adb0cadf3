"""Relay policy (standardness) that libbitcoinkernel does not enforce: pure functions.

Rules / theory of operation (values and reason strings follow Bitcoin Core 28's policy):
- Output scripts must be a standard type (P2PKH, P2SH, P2WPKH, P2WSH, P2TR, other witness
  programs, bare multisig up to 3 keys, one OP_RETURN of at most 83 bytes): ``scriptpubkey``.
- Dust: an output is dust when it is worth less than the fee of spending it at 3 sat/vB
  (Core's ``GetDustThreshold``): 546 sat for P2PKH, 294 for P2WPKH, 330 for P2WSH/P2TR: ``dust``.
- ``scriptSig`` must be push-only and at most 1650 bytes.
- P2WSH witnesses: script at most 3600 bytes, at most 100 stack items of at most 80 bytes.
- LOW_S: every witness item that is a strictly DER-encoded signature must have S <= n/2.
  A non-signature item (a preimage, a pubkey, a selector) cannot be strict DER, so checking every
  item that parses as DER is exact for the scripts the node builds.
- MINIMALIF (segwit v0 policy): the argument consumed by OP_IF / OP_NOTIF must be empty or
  exactly 0x01. We find those arguments by tracing the witness script over its witness stack
  with a small interpreter that knows the stack-shuffling, hashing, comparison, signature and
  lock-time opcodes. Signature opcodes are traced as "succeeds iff the signature is non-empty",
  which is what NULLFAIL (also standard policy) guarantees for a script the kernel accepted.
  On an opcode the tracer does not model it stops and passes the input: the kernel has already
  enforced consensus, so the only cost is a policy check skipped for exotic scripts.
"""
from __future__ import annotations

import hashlib

from eschaton.core.txcodec import Tx, TxIn

DUST_RELAY_FEE = 3000  # sat/kvB
MIN_RELAY_FEE = 1000  # sat/kvB: 1 sat/vB
MAX_OP_RETURN_RELAY = 83
MAX_STANDARD_WEIGHT = 400_000
MAX_SCRIPTSIG_SIZE = 1650
MAX_P2WSH_SCRIPT = 3600
MAX_P2WSH_STACK_ITEMS = 100
MAX_P2WSH_ITEM = 80
SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0

LOW_S_DETAIL = "Non-canonical signature: S value is unnecessarily high"
MINIMALIF_DETAIL = "OP_IF/NOTIF argument must be minimal"


class PolicyViolation(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason)


def witness_program(spk: bytes) -> tuple[int, bytes] | None:
    if 4 <= len(spk) <= 42 and (spk[0] == 0 or 0x51 <= spk[0] <= 0x60) and spk[1] == len(spk) - 2:
        return (0 if spk[0] == 0 else spk[0] - 0x50), spk[2:]
    return None


def script_type(spk: bytes) -> str | None:
    """Core's ``Solver`` for the standard types; None when non-standard."""
    n = len(spk)
    if n == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac":
        return "pubkeyhash"
    if n == 23 and spk[:2] == b"\xa9\x14" and spk[22] == 0x87:
        return "scripthash"
    wp = witness_program(spk)
    if wp is not None:
        ver, prog = wp
        if ver == 0 and len(prog) == 20:
            return "witness_v0_keyhash"
        if ver == 0 and len(prog) == 32:
            return "witness_v0_scripthash"
        if ver == 1 and len(prog) == 32:
            return "witness_v1_taproot"
        if ver == 0:
            return None
        return "witness_unknown"
    if n >= 1 and spk[0] == 0x6A:
        return "nulldata" if _push_only(spk[1:]) else None
    if n in (35, 67) and spk[0] == n - 2 and spk[-1] == 0xAC:
        return "pubkey"
    if n >= 37 and spk[-1] == 0xAE and 0x51 <= spk[0] <= 0x53 and 0x51 <= spk[-2] <= 0x53:
        return "multisig"
    return None


def dust_threshold(spk: bytes) -> int:
    if spk[:1] == b"\x6a" or len(spk) > 10_000:
        return 0
    size = 8 + len(_compact(len(spk))) + len(spk)
    # Spending input size: witness programs get the 75% discount on their witness.
    size += (32 + 4 + 1 + (107 // 4) + 4) if witness_program(spk) else (32 + 4 + 1 + 107 + 4)
    return DUST_RELAY_FEE * size // 1000


def _compact(n: int) -> bytes:
    return bytes([n]) if n < 0xFD else b"\xfd" + n.to_bytes(2, "little")


def _push_only(script: bytes) -> bool:
    try:
        for op, _ in iter_script(script):
            if op > 0x60:
                return False
    except ValueError:
        return False
    return True


def iter_script(script: bytes) -> list[tuple[int, bytes | None]]:
    """(opcode, pushed data or None); raises ValueError on a truncated push."""
    out: list[tuple[int, bytes | None]] = []
    i = 0
    n = len(script)
    while i < n:
        op = script[i]
        i += 1
        if op <= 0x4E:
            if op < 0x4C:
                ln = op
            else:
                width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[op]
                if i + width > n:
                    raise ValueError("truncated push length")
                ln = int.from_bytes(script[i : i + width], "little")
                i += width
            if i + ln > n:
                raise ValueError("truncated push")
            out.append((op, script[i : i + ln]))
            i += ln
        else:
            out.append((op, None))
    return out


def check_transaction(tx: Tx) -> None:
    """Context-free standardness of the transaction itself (outputs, scriptSigs, size)."""
    if not 1 <= tx.version <= 3:
        raise PolicyViolation("version")
    if tx.weight > MAX_STANDARD_WEIGHT:
        raise PolicyViolation("tx-size")
    if tx.base_size < 65:
        raise PolicyViolation("tx-size-small")
    n_data = 0
    for out in tx.outputs:
        kind = script_type(out.script_pubkey)
        if kind is None:
            raise PolicyViolation("scriptpubkey")
        if kind == "nulldata":
            n_data += 1
            if len(out.script_pubkey) > MAX_OP_RETURN_RELAY:
                raise PolicyViolation("scriptpubkey", "OP_RETURN too large")
        elif out.value < dust_threshold(out.script_pubkey):
            raise PolicyViolation("dust")
    if n_data > 1:
        raise PolicyViolation("multi-op-return")
    for txin in tx.inputs:
        if len(txin.script_sig) > MAX_SCRIPTSIG_SIZE:
            raise PolicyViolation("scriptsig-size")
        if not _push_only(txin.script_sig):
            raise PolicyViolation("scriptsig-not-pushonly")


def check_input_witness(txin: TxIn, spent_spk: bytes) -> None:
    """Witness standardness, LOW_S and MINIMALIF for one input (after consensus verification)."""
    wp = witness_program(spent_spk)
    for item in txin.witness:
        if is_high_s_signature(item):
            raise PolicyViolation("non-mandatory-script-verify-flag", LOW_S_DETAIL)
    if wp is None or wp[0] != 0 or len(wp[1]) != 32 or not txin.witness:
        return
    script = txin.witness[-1]
    stack = list(txin.witness[:-1])
    if len(script) > MAX_P2WSH_SCRIPT or len(stack) > MAX_P2WSH_STACK_ITEMS or any(
        len(x) > MAX_P2WSH_ITEM for x in stack
    ):
        raise PolicyViolation("bad-witness-nonstandard")
    if not trace_minimal_if(script, stack):
        raise PolicyViolation("non-mandatory-script-verify-flag", MINIMALIF_DETAIL)


def _der_s(sig: bytes) -> int | None:
    """S of a strictly DER-encoded signature with a trailing hashtype byte (BIP66), else None."""
    n = len(sig)
    if n < 9 or n > 73 or sig[0] != 0x30 or sig[1] != n - 3:
        return None
    len_r = sig[3]
    if 5 + len_r >= n:
        return None
    len_s = sig[5 + len_r]
    if len_r + len_s + 7 != n or sig[2] != 0x02 or len_r == 0 or sig[4] & 0x80:
        return None
    if len_r > 1 and sig[4] == 0 and not sig[5] & 0x80:
        return None
    if sig[len_r + 4] != 0x02 or len_s == 0 or sig[len_r + 6] & 0x80:
        return None
    if len_s > 1 and sig[len_r + 6] == 0 and not sig[len_r + 7] & 0x80:
        return None
    return int.from_bytes(sig[len_r + 6 : len_r + 6 + len_s], "big")


def is_high_s_signature(item: bytes) -> bool:
    s = _der_s(item)
    return s is not None and s > SECP256K1_HALF_N


def _num(b: bytes) -> int:
    if not b:
        return 0
    v = int.from_bytes(b, "little")
    if b[-1] & 0x80:
        return -(v & ~(0x80 << (8 * (len(b) - 1))))
    return v


def _enc_num(n: int) -> bytes:
    if n == 0:
        return b""
    out = bytearray()
    v = abs(n)
    while v:
        out.append(v & 0xFF)
        v >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if n < 0 else 0)
    elif n < 0:
        out[-1] |= 0x80
    return bytes(out)


_HASHES = {
    0xA6: lambda b: hashlib.new("ripemd160", b).digest(),
    0xA7: lambda b: hashlib.sha1(b).digest(),
    0xA8: lambda b: hashlib.sha256(b).digest(),
    0xA9: lambda b: hashlib.new("ripemd160", hashlib.sha256(b).digest()).digest(),
    0xAA: lambda b: hashlib.sha256(hashlib.sha256(b).digest()).digest(),
}
_NOPS = {0x61, 0xB0, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9}


def trace_minimal_if(script: bytes, stack: list[bytes]) -> bool:
    """False if an executed OP_IF/OP_NOTIF consumes a non-minimal argument (see module doc)."""
    try:
        ops = iter_script(script)
    except ValueError:
        return True
    st = list(stack)
    alt: list[bytes] = []
    exec_stack: list[bool] = []
    try:
        for op, data in ops:
            executing = all(exec_stack)
            if op in (0x63, 0x64):
                if executing:
                    arg = st.pop()
                    if arg not in (b"", b"\x01"):
                        return False
                    cond = arg == b"\x01"
                    exec_stack.append(cond if op == 0x63 else not cond)
                else:
                    exec_stack.append(False)
                continue
            if op == 0x67:
                exec_stack[-1] = not exec_stack[-1]
                continue
            if op == 0x68:
                exec_stack.pop()
                continue
            if not executing:
                continue
            if data is not None:
                st.append(data)
            elif op == 0x4F or 0x51 <= op <= 0x60:
                st.append(_enc_num(-1 if op == 0x4F else op - 0x50))
            elif op in _NOPS:
                pass
            elif op == 0x69:
                st.pop()
            elif op == 0x6B:
                alt.append(st.pop())
            elif op == 0x6C:
                st.append(alt.pop())
            elif op == 0x73:
                if st[-1] not in (b"",):
                    st.append(st[-1])
            elif op == 0x74:
                st.append(_enc_num(len(st)))
            elif op == 0x75:
                st.pop()
            elif op == 0x76:
                st.append(st[-1])
            elif op == 0x77:
                del st[-2]
            elif op == 0x78:
                st.append(st[-2])
            elif op == 0x7B:
                st.append(st.pop(-3))
            elif op == 0x7C:
                st[-1], st[-2] = st[-2], st[-1]
            elif op == 0x7D:
                st.insert(-2, st[-1])
            elif op == 0x82:
                st.append(_enc_num(len(st[-1])))
            elif op in (0x87, 0x88):
                a, b = st.pop(), st.pop()
                if op == 0x87:
                    st.append(b"\x01" if a == b else b"")
            elif op in _HASHES:
                st.append(_HASHES[op](st.pop()))
            elif op in (0xAC, 0xAD):
                st.pop()
                sig = st.pop()
                if op == 0xAC:
                    st.append(b"\x01" if sig else b"")
            elif op in (0xAE, 0xAF):
                n_keys = _num(st.pop())
                del st[len(st) - n_keys :]
                n_sigs = _num(st.pop())
                sigs = st[len(st) - n_sigs :] if n_sigs else []
                del st[len(st) - n_sigs :]
                st.pop()  # the dummy element
                if op == 0xAE:
                    st.append(b"\x01" if all(sigs) else b"")
            else:
                return True  # an opcode the tracer does not model: see module doc
    except (IndexError, ValueError):
        return True
    return True
